//! Idle websocket memory benchmark client (filled in by the bench harness work).
fn main() {}
