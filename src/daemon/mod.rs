//! `grasp-sync run`: the sync daemon, wiring the host (strfry) to the engine.

pub mod state;
