//! `kgate bench-identity` (hidden, only with the `bench` feature that `cargo xtask
//! bench` builds with): the identity check's cost as one JSON line of nanoseconds.
//!
//! Not here: the measurement ([`crate::identity::bench`]).

/// Prints `{"hit_ns": …, "miss_ns": …, "oidc_hit_ns": …, "oidc_miss_ns": …}`.
pub(super) fn identity() -> anyhow::Result<()> {
    let costs = super::runtime()?.block_on(crate::identity::bench::measure(2000, 200_000))?;
    let (hit, miss) = costs.service_account;
    let (oidc_hit, oidc_miss) = costs.oidc;
    println!(
        "{}",
        serde_json::json!({
            "hit_ns": hit.as_nanos(), "miss_ns": miss.as_nanos(),
            "oidc_hit_ns": oidc_hit.as_nanos(), "oidc_miss_ns": oidc_miss.as_nanos(),
        })
    );
    Ok(())
}
