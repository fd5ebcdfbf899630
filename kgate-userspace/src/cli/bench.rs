//! `kgate bench-identity` (hidden, only with the `bench` feature that `cargo xtask
//! bench` builds with): the identity check's cost as one JSON line of nanoseconds.
//!
//! Not here: the measurement ([`crate::identity::bench`]).

/// Prints `{"hit_ns": …, "miss_ns": …}`.
pub(super) fn identity() -> anyhow::Result<()> {
    let (hit, miss) = super::runtime()?.block_on(crate::identity::bench::measure(2000, 200_000))?;
    println!(
        "{}",
        serde_json::json!({"hit_ns": hit.as_nanos(), "miss_ns": miss.as_nanos()})
    );
    Ok(())
}
