//! State-machine tests of the broker core, with tokio's clock paused so expiry is deterministic.
