//! The wire protocol: frame parsing and encoding, and every code.

pub mod codes;
pub mod frame;

pub use codes::{CloseCode, ErrorCode};
pub use frame::{FrameError, Inbound, Intent};
