//! The official emulator's `Config.json` (`UserConfig.Namespaces[].Queues[]`). TO BE WRITTEN (broker helper).

/// The parsed configuration.
#[derive(Debug, Clone)]
pub struct Config {}
