//! The cost of one MOSAIC call from Rust, the baseline of the Python package's overhead benchmark
//! (crates/python/benches/overhead.py): n agents, M candidates, importance weights, a seeded draw;
//! the matrix is built from rows each call, as a front end does. Prints the median over rounds of
//! the mean nanoseconds per call.
//!
//! ```text
//! cargo run --release -p llm-auction-mechanism --example mosaic_call -- [N] [M] [ROUNDS]
//! ```

use llm_auction_mechanism::mosaic::{Mosaic, RewardMatrix, draw_winner};
use llm_auction_mechanism::rng::{rng_from_seed, uniform_open01};
use std::hint::black_box;
use std::time::Instant;

fn arg(i: usize, default: usize) -> usize {
    std::env::args()
        .nth(i)
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let (n, m, rounds) = (arg(1, 2), arg(2, 16), arg(3, 31));
    let mut rng = rng_from_seed(1);
    let rows: Vec<Vec<f64>> = (0..n)
        .map(|_| {
            (0..m)
                .map(|_| uniform_open01(&mut rng) * 4.0 - 2.0)
                .collect()
        })
        .collect();
    let log_ref: Vec<f64> = (0..m).map(|_| -uniform_open01(&mut rng) * 30.0).collect();
    let log_gen: Vec<f64> = (0..m).map(|_| -uniform_open01(&mut rng) * 30.0).collect();
    let calls = 20_000;
    let mut per_call = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let start = Instant::now();
        for s in 0..calls {
            let r = RewardMatrix::from_rows(black_box(&rows)).expect("valid rows");
            let out = Mosaic::new(1.0)
                .expect("valid tau")
                .run_from_logprobs(&r, Some(&log_ref), Some(&log_gen))
                .expect("valid input");
            black_box(draw_winner(&out.allocation, &mut rng_from_seed(s)));
        }
        per_call.push(start.elapsed().as_nanos() as f64 / calls as f64);
    }
    per_call.sort_by(f64::total_cmp);
    println!(
        "{{\"n\": {n}, \"m\": {m}, \"median_ns\": {}}}",
        per_call[rounds / 2]
    );
}
