//! Bedrock as it is in December 2026, end to end through the SDK setup: the quickstart's
//! workload on the 15x and 10x burndown tiers, a server out of step with the crate's table, a
//! bearer-authenticated client, a 529. In a binary of its own: its workloads load the machine,
//! and the timing-sensitive tests of `tests/sdk` must not share it with them.

#![cfg(all(feature = "sdk", feature = "emulator"))]

mod late_2026;
#[path = "../../examples/support/load.rs"]
mod load;
#[path = "../sdk/support.rs"]
#[allow(dead_code)]
mod support;
