//! The bare kernel on a many-node ping-pong load: events per second with the trace hash
//! computed and no trace file written.
//!
//! Run: `cargo bench -p sim-core --bench kernel` (optionally `-- NODES SECONDS`).

use std::time::Instant;

use rand::RngExt;
use serde::Serialize;
use sim_core::network::{Latency, LinkConfig, NetworkConfig};
use sim_core::trace::{TraceOptions, format_hash};
use sim_core::{Ctx, NodeId, OpId, Process, SimConfig, SimDuration, Simulation, TimerId};

#[derive(Debug, Clone, Serialize)]
enum Msg {
    Ping(u64),
    Pong(u64),
}

struct PingPong;

impl PingPong {
    fn ping_someone(ctx: &mut Ctx<'_, Self>, n: u64) {
        let count = ctx.node_count() as u32;
        let mut to = NodeId(ctx.rng().random_range(0..count - 1));
        if to >= ctx.id() {
            to = NodeId(to.0 + 1);
        }
        ctx.send(to, Msg::Ping(n));
    }
}

impl Process for PingPong {
    type Msg = Msg;
    type Timer = ();
    type Op = ();
    type Reply = ();
    type Obs = ();

    fn on_start(&mut self, ctx: &mut Ctx<'_, Self>) {
        for i in 0..4 {
            Self::ping_someone(ctx, i);
        }
    }
    fn on_message(&mut self, ctx: &mut Ctx<'_, Self>, from: NodeId, msg: Msg) {
        match msg {
            Msg::Ping(n) => ctx.send(from, Msg::Pong(n)),
            Msg::Pong(n) => Self::ping_someone(ctx, n + 1),
        }
    }
    fn on_timer(&mut self, _: &mut Ctx<'_, Self>, _: TimerId, _: ()) {}
    fn on_client(&mut self, _: &mut Ctx<'_, Self>, _: OpId, _: ()) {}
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let nodes: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(64);
    let seconds: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(60);
    let mut config = SimConfig::new(42, nodes);
    config.duration = SimDuration::from_secs(seconds);
    config.quiet_period = SimDuration::ZERO;
    config.max_events = u64::MAX;
    config.network = NetworkConfig {
        default_link: LinkConfig {
            latency: Latency::Uniform {
                min: SimDuration::from_micros(500),
                max: SimDuration::from_millis(2),
            },
            drop_probability: 0.0,
            duplicate_probability: 0.0,
        },
        links: Default::default(),
    };
    let sim = Simulation::new(config, |_| PingPong, None, TraceOptions::default())
        .expect("valid configuration");
    let started = Instant::now();
    let out = sim.run();
    let elapsed = started.elapsed().as_secs_f64();
    let queue = out.stats.queue_events;
    let traced = out.stats.trace_events;
    println!(
        "kernel ping-pong: {nodes} nodes, {seconds} simulated seconds, 4 pings in flight per node"
    );
    println!("  wall time        {elapsed:.3} s");
    println!(
        "  kernel events    {queue} ({:.2} M/s)",
        queue as f64 / elapsed / 1e6
    );
    println!(
        "  trace events     {traced} ({:.2} M/s, hashed)",
        traced as f64 / elapsed / 1e6
    );
    println!(
        "  messages         {} sent, {} delivered",
        out.stats.messages_sent, out.stats.messages_delivered
    );
    println!("trace-hash: {}", format_hash(out.trace_hash));
}
