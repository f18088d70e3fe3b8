//! Running on a schedule: `run` (one pass over every site: `probe run`) and `watch` (each site
//! on its interval: `probe watch`), both judging results with `alert` and storing them.

pub mod run;
pub mod shared;
pub mod watch;
