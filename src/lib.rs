//! ferry library (work in progress)
pub mod metrics;
pub mod pipeline;
pub mod gzip;
