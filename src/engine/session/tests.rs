//! Planner tests without sockets.
