//! Wiring
