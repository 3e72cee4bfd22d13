//! The shared harness (`phase3_observability::testing`, also used by the dashboard's
//! tests).

pub use phase3_observability::testing::*;
