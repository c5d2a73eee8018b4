//! The dense and sparse kernels at the W1 shapes of shared/reference-workload.md: the pin
//! tower's 4096 rows (2048 positives plus 2048 hard negatives) through a 128-wide DCN v2 cross
//! layer and the MLP and head linears, the embedding lookups, and the optimiser updates. The
//! softmax cross-entropy has its own benchmark (`softmax`).
//!
//! Throughput counts rows, ids or parameters, so the figures compare across shapes.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use convcg_kernels::{
    Accum, AdagradParams, AdamParams, CrossSaved, EmbedBlock, InputGrad, Lookup, Par, Precision,
    Rows, RowsMut, SparseRowGrad, TableScatter, WeightGrads, adam_update, bag_mean_backward,
    bag_mean_forward, cross_backward, cross_forward, embed_backward, embed_forward,
    gather_backward, gather_forward, linear_backward, linear_forward, linear_relu_forward,
    rowwise_adagrad_update,
};

/// Rows through one tower: B positives plus H = 1 hard negative each.
const N: usize = 4096;
/// Tower input width, and the cross layers' width.
const D: usize = 128;
/// Embedding width of every table.
const DIM: usize = 16;
/// Examples in a batch, each with one bag.
const BAGS: usize = 2048;
/// Ids per bag of the bagged user feature.
const BAG_LEN: usize = 20;
/// Rows of the bagged table.
const BAG_TABLE_ROWS: usize = 10_000;
/// Rows of the largest table.
const BIG_TABLE_ROWS: usize = 1_000_000;
/// Rows of the query tower's other tables (W1's user features).
const SMALL_TABLE_ROWS: [usize; 4] = [100_000, 1_000, 100, 3];
/// Dense inputs per row.
const DENSE: usize = 32;
/// Dense parameters of one tower: 3 cross layers, MLP 128 -> 256 -> 128, head 256 -> 64.
const TOWER_PARAMS: usize = 3 * (D * D + D) + (D * 256 + 256) + (256 * D + D) + (256 * 64 + 64);

fn par() -> Par {
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    if threads > 1 {
        Par::rayon(threads)
    } else {
        Par::Seq
    }
}

fn uniform(rng: &mut ChaCha8Rng, len: usize) -> Vec<f32> {
    (0..len).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

fn ids(rng: &mut ChaCha8Rng, len: usize, rows: usize) -> Vec<u32> {
    (0..len).map(|_| rng.random_range(0..rows as u32)).collect()
}

fn cross(c: &mut Criterion) {
    let par = par();
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let x0 = uniform(&mut rng, N * D);
    let xl = uniform(&mut rng, N * D);
    let w = uniform(&mut rng, D * D);
    let b = uniform(&mut rng, D);
    let dout = uniform(&mut rng, N * D);
    let mut z = vec![0.0f32; N * D];
    let mut out = vec![0.0f32; N * D];
    let (mut dz, mut dx0, mut dxl) = (
        vec![0.0f32; N * D],
        vec![0.0f32; N * D],
        vec![0.0f32; N * D],
    );
    let (mut dw, mut db) = (vec![0.0f32; D * D], vec![0.0f32; D]);
    let (x0, xl, w) = (
        Rows::new(&x0, N, D),
        Rows::new(&xl, N, D),
        Rows::new(&w, D, D),
    );
    let dout = Rows::new(&dout, N, D);
    let forward = |z: &mut [f32], out: &mut [f32]| {
        let (z, out) = (RowsMut::new(z, N, D), RowsMut::new(out, N, D));
        cross_forward(out, z, x0, xl, w, &b, Precision::F32, par);
    };
    forward(&mut z, &mut out);

    let mut group = c.benchmark_group("cross");
    group.throughput(Throughput::Elements(N as u64));
    group.bench_function("forward", |bench| {
        bench.iter(|| {
            forward(&mut z, &mut out);
            black_box(&out);
        })
    });
    group.bench_function("backward", |bench| {
        bench.iter(|| {
            let saved = CrossSaved {
                x0,
                xl,
                w,
                z: Rows::new(&z, N, D),
            };
            cross_backward(
                InputGrad::new(RowsMut::new(&mut dx0, N, D), Accum::Add),
                Some(InputGrad::new(RowsMut::new(&mut dxl, N, D), Accum::Replace)),
                WeightGrads {
                    dw: RowsMut::new(&mut dw, D, D),
                    db: Some(&mut db),
                },
                RowsMut::new(&mut dz, N, D),
                saved,
                dout,
                Precision::F32,
                par,
            );
            black_box(&dxl);
        })
    });
    group.finish();
}

fn linear(c: &mut Criterion) {
    let par = par();
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let mut group = c.benchmark_group("linear");
    group.throughput(Throughput::Elements(N as u64));
    for (d_in, d_out) in [(D, 256), (256, 64)] {
        let x = uniform(&mut rng, N * d_in);
        let w = uniform(&mut rng, d_in * d_out);
        let b = uniform(&mut rng, d_out);
        let dy = uniform(&mut rng, N * d_out);
        let mut y = vec![0.0f32; N * d_out];
        let mut dx = vec![0.0f32; N * d_in];
        let (mut dw, mut db) = (vec![0.0f32; d_in * d_out], vec![0.0f32; d_out]);
        let (x, w) = (Rows::new(&x, N, d_in), Rows::new(&w, d_in, d_out));
        let dy = Rows::new(&dy, N, d_out);
        group.bench_function(format!("forward/{d_in}x{d_out}"), |bench| {
            bench.iter(|| {
                linear_forward(
                    RowsMut::new(&mut y, N, d_out),
                    x,
                    w,
                    Some(&b),
                    Precision::F32,
                    par,
                );
                black_box(&y);
            })
        });
        // With the ReLU in the same row blocks, as the MLP layers run.
        group.bench_function(format!("forward_relu/{d_in}x{d_out}"), |bench| {
            bench.iter(|| {
                linear_relu_forward(
                    RowsMut::new(&mut y, N, d_out),
                    x,
                    w,
                    Some(&b),
                    Precision::F32,
                    par,
                );
                black_box(&y);
            })
        });
        group.bench_function(format!("backward/{d_in}x{d_out}"), |bench| {
            bench.iter(|| {
                let grad = InputGrad::new(RowsMut::new(&mut dx, N, d_in), Accum::Replace);
                let weights = WeightGrads {
                    dw: RowsMut::new(&mut dw, d_in, d_out),
                    db: Some(&mut db),
                };
                linear_backward(Some(grad), weights, x, w, dy, Precision::F32, par);
                black_box(&dx);
            })
        });
    }
    group.finish();
}

fn embedding(c: &mut Criterion) {
    let par = par();
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let bag_table = uniform(&mut rng, BAG_TABLE_ROWS * DIM);
    let bag_ids = ids(&mut rng, BAGS * BAG_LEN, BAG_TABLE_ROWS);
    let offsets: Vec<usize> = (0..=BAGS).map(|i| i * BAG_LEN).collect();
    let bag_dout = uniform(&mut rng, BAGS * DIM);
    let mut bag_out = vec![0.0f32; BAGS * DIM];
    let mut bag_grad = SparseRowGrad::new(BAG_TABLE_ROWS, DIM);

    let big_table = uniform(&mut rng, BIG_TABLE_ROWS * DIM);
    let big_ids = ids(&mut rng, N, BIG_TABLE_ROWS);
    let gather_dout = uniform(&mut rng, N * DIM);
    let mut gather_out = vec![0.0f32; N * DIM];
    let mut gather_grad = SparseRowGrad::new(BIG_TABLE_ROWS, DIM);
    let bag_rows = Rows::new(&bag_table, BAG_TABLE_ROWS, DIM);
    let big_rows = Rows::new(&big_table, BIG_TABLE_ROWS, DIM);

    let mut group = c.benchmark_group("embedding");
    group.throughput(Throughput::Elements((BAGS * BAG_LEN) as u64));
    group.bench_function("bag_mean_forward", |bench| {
        bench.iter(|| {
            let (out, table) = (RowsMut::new(&mut bag_out, BAGS, DIM), bag_rows);
            bag_mean_forward(out, table, &bag_ids, &offsets, par);
            black_box(&bag_out);
        })
    });
    group.bench_function("bag_mean_backward", |bench| {
        bench.iter(|| {
            bag_grad.clear();
            let dout = Rows::new(&bag_dout, BAGS, DIM);
            bag_mean_backward(&mut bag_grad, &bag_ids, &offsets, dout);
            black_box(bag_grad.values());
        })
    });
    group.throughput(Throughput::Elements(N as u64));
    group.bench_function("gather_forward", |bench| {
        bench.iter(|| {
            let out = RowsMut::new(&mut gather_out, N, DIM);
            gather_forward(out, big_rows, &big_ids, par);
            black_box(&gather_out);
        })
    });
    group.bench_function("gather_backward", |bench| {
        bench.iter(|| {
            gather_grad.clear();
            let dout = Rows::new(&gather_dout, N, DIM);
            gather_backward(&mut gather_grad, &big_ids, dout);
            black_box(gather_grad.values());
        })
    });

    // The query tower's x0: its five tables, its bag and its dense inputs side by side.
    let small: Vec<(Vec<f32>, Vec<u32>)> = SMALL_TABLE_ROWS
        .iter()
        .map(|&rows| (uniform(&mut rng, rows * DIM), ids(&mut rng, BAGS, rows)))
        .collect();
    let user_ids = ids(&mut rng, BAGS, BIG_TABLE_ROWS);
    let dense = uniform(&mut rng, BAGS * DENSE);
    let mut blocks = vec![EmbedBlock::Table {
        table: big_rows,
        lookup: Lookup::Rows(&user_ids),
    }];
    blocks.extend(small.iter().map(|(table, ids)| EmbedBlock::Table {
        table: Rows::new(table, table.len() / DIM, DIM),
        lookup: Lookup::Rows(ids),
    }));
    let bag = Lookup::Bags {
        ids: &bag_ids,
        offsets: &offsets,
    };
    blocks.push(EmbedBlock::Table {
        table: bag_rows,
        lookup: bag,
    });
    blocks.push(EmbedBlock::Dense(Rows::new(&dense, BAGS, DENSE)));
    let width = 6 * DIM + DENSE;
    let mut x0 = vec![0.0f32; BAGS * width];
    let dx0 = uniform(&mut rng, BAGS * width);
    let mut grads: Vec<SparseRowGrad> = [BIG_TABLE_ROWS]
        .iter()
        .chain(&SMALL_TABLE_ROWS)
        .chain(&[BAG_TABLE_ROWS])
        .map(|&rows| SparseRowGrad::new(rows, DIM))
        .collect();
    group.throughput(Throughput::Elements(BAGS as u64));
    group.bench_function("embed_forward/query_x0", |bench| {
        bench.iter(|| {
            embed_forward(RowsMut::new(&mut x0, BAGS, width), &blocks, par);
            black_box(&x0);
        })
    });
    group.bench_function("embed_backward/query_x0", |bench| {
        bench.iter(|| {
            let mut tasks: Vec<TableScatter<'_>> = grads
                .iter_mut()
                .zip(&blocks)
                .enumerate()
                .map(|(i, (grad, block))| {
                    grad.clear();
                    let EmbedBlock::Table { lookup, .. } = *block else {
                        unreachable!("the first six blocks are lookups")
                    };
                    TableScatter {
                        grad,
                        lookups: vec![(lookup, i * DIM)],
                    }
                })
                .collect();
            embed_backward(&mut tasks, Rows::new(&dx0, BAGS, width), par);
            black_box(&tasks);
        })
    });
    group.finish();
}

fn optim(c: &mut Criterion) {
    let par = par();
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let mut w = uniform(&mut rng, TOWER_PARAMS);
    let g = uniform(&mut rng, TOWER_PARAMS);
    let (mut m, mut v) = (vec![0.0f32; TOWER_PARAMS], vec![0.0f32; TOWER_PARAMS]);

    let mut table = uniform(&mut rng, BIG_TABLE_ROWS * DIM);
    let mut state = vec![0.0f32; BIG_TABLE_ROWS];
    let mut grad = SparseRowGrad::new(BIG_TABLE_ROWS, DIM);
    let touched = ids(&mut rng, N, BIG_TABLE_ROWS);
    let dout = uniform(&mut rng, N * DIM);
    gather_backward(&mut grad, &touched, Rows::new(&dout, N, DIM));

    let mut group = c.benchmark_group("optim");
    group.throughput(Throughput::Elements(TOWER_PARAMS as u64));
    group.bench_function("adam", |bench| {
        // A fixed step keeps the bias correction, and so the work, the same every iteration.
        bench.iter(|| {
            adam_update(&mut w, &g, &mut m, &mut v, 10, AdamParams::default(), par);
            black_box(&w);
        })
    });
    group.throughput(Throughput::Elements((grad.len() * DIM) as u64));
    group.bench_function("rowwise_adagrad", |bench| {
        bench.iter(|| {
            let p = AdagradParams {
                lr: 0.05,
                eps: 1e-8,
                weight_decay: 0.0,
            };
            rowwise_adagrad_update(&mut table, &mut state, &grad, p, par);
            black_box(&table);
        })
    });
    group.finish();
}

criterion_group!(benches, cross, linear, embedding, optim);
criterion_main!(benches);
