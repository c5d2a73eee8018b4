//! Online retrieval: a trained run opened once ([`Retriever`]) answers requests for the top K
//! pins of a user on a surface, in its context; `http` puts it behind `convcg serve`, with
//! its Prometheus `metrics`, and `batching` its workers; `ann` is the approximate index.

mod ann;
mod batching;
mod engine;
mod http;
mod metrics;

pub use ann::HnswOptions;
pub use batching::{MAX_BATCH, QUEUE_LEN};
pub use engine::{Answer, IndexChoice, Item, OpenOptions, Request, Retriever};
pub use http::{
    ADMIN_TOKEN_ENV, MAX_BODY_BYTES, MAX_LIST_LEN, RetrieveBody, ServeOptions, parse_addr, serve,
};
