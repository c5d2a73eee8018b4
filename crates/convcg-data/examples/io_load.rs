//! Times read_log on a dataset directory: `io_load DIR [core|all] [catalogue|ids] [repeats]`.
use std::time::Instant;

use convcg_data::io::{ImpressionColumns, ReadOptions, read_log};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = std::path::PathBuf::from(&args[1]);
    let core = args.get(2).is_none_or(|a| a == "core");
    let catalogue = args.get(3).is_some_and(|a| a == "catalogue");
    let repeats: usize = args.get(4).map_or(5, |a| a.parse().unwrap());
    let opts = ReadOptions {
        impression_columns: if core {
            ImpressionColumns::Core
        } else {
            ImpressionColumns::All
        },
        catalogue,
        ..ReadOptions::default()
    };
    let mut times = Vec::new();
    for _ in 0..repeats {
        let t = Instant::now();
        let (log, report) = read_log(&dir, &opts).unwrap();
        let s = t.elapsed().as_secs_f64();
        times.push(s);
        eprintln!("{s:.3} s, {} events", log.num_events());
        if times.len() == 1 {
            eprint!("{report}");
        }
        drop(log);
    }
    times.sort_by(f64::total_cmp);
    println!(
        "{} core={core} catalogue={catalogue} threads={} median {:.3} s min {:.3} max {:.3}",
        dir.display(),
        rayon::current_num_threads(),
        times[times.len() / 2],
        times[0],
        times[times.len() - 1]
    );
}
