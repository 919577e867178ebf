//! The list of properties (`docs/mechanisms.md` §3) with their statements, sources and relative cost.

/// One property of `docs/mechanisms.md` §3.
pub struct Prop {
    /// Id, e.g. `M2`.
    pub id: &'static str,
    /// Short statement.
    pub property: &'static str,
    /// Where it comes from.
    pub source: &'static str,
    /// Cases run = max(1, base / divisor); statistical tests are expensive per case.
    pub divisor: u32,
}

const fn p(id: &'static str, property: &'static str, source: &'static str, divisor: u32) -> Prop {
    Prop {
        id,
        property,
        source,
        divisor,
    }
}

/// Every property; `catalog_lists_every_property_once` checks that the ids are M1-M18 and T1-T15.
pub const CATALOG: &[Prop] = &[
    p(
        "M1",
        "allocation is a probability vector",
        "SCS25 Eq. 8 / Alg. 2",
        1,
    ),
    p(
        "M2",
        "DSIC: truthful reporting maximises utility",
        "SCS25 Thm 5.1",
        1,
    ),
    p(
        "M3",
        "zero reward => zero payment and utility",
        "SCS25 Lemma 5.2",
        1,
    ),
    p(
        "M4",
        "almost IR: non-negative rewards => U >= 0",
        "SCS25 Lemma 5.3",
        1,
    ),
    p(
        "M5",
        "U_i = tau log sum pi^-i exp(r/tau)",
        "SCS25 Lemma 5.5",
        1,
    ),
    p(
        "M6",
        "gradient of U_i is the allocation",
        "SCS25 Thm 5.1 (proof)",
        1,
    ),
    p("M7", "U_i is convex in r_i", "SCS25 Thm 5.1 (proof)", 1),
    p(
        "M8",
        "0 <= p_i <= (pi - pi^-i).r_i",
        "mechanisms.md §2.2 (derived)",
        1,
    ),
    p(
        "M9",
        "min r <= U_i <= max r, U_i >= pi^-i.r_i",
        "mechanisms.md §2.2 (derived)",
        1,
    ),
    p(
        "M10",
        "shift invariance of allocation and payments",
        "mechanisms.md §2.2 (derived)",
        1,
    ),
    p(
        "M11",
        "U_i = SW(N) - SW(N\\{i})",
        "mechanisms.md §2.2 / v5 offset",
        1,
    ),
    p(
        "M12",
        "single advertiser: p = Rochet integral > 0",
        "mechanisms.md §2.2 / SCS25 Thm 5.1",
        1,
    ),
    p(
        "M13",
        "payments = Rochet integrals; revenue >= 0",
        "SCS25 Thm 5.1, Eq. 10 / 13",
        1,
    ),
    p(
        "M14",
        "candidate permutation equivariance",
        "SCS25 Remark 2",
        1,
    ),
    p(
        "M15",
        "E[alloc] -> pi_r at rate 1/M (random spaces)",
        "SCS25 Thm 4.1 / 4.3",
        20,
    ),
    p(
        "M16",
        "J(pi_r) = max J (direct maximisation)",
        "SCS25 Eq. 1-2",
        1,
    ),
    p(
        "M17",
        "Eq. 11 rewards make pi_i the KL optimum",
        "SCS25 Eq. 11 / 17, Eq. 2",
        1,
    ),
    p(
        "M18",
        "seeded draw: reproducible, frequencies = pi",
        "mechanisms.md §2.1",
        4,
    ),
    p(
        "T1",
        "aggregates are distributions",
        "DMPXZ24 (mechanisms.md §1.1)",
        1,
    ),
    p(
        "T2",
        "blog example gives (0.56, 0.44)",
        "Google blog",
        u32::MAX,
    ),
    p(
        "T3",
        "linear is robust (segment) monotone",
        "mechanisms.md §1.2 (derived)",
        1,
    ),
    p(
        "T4",
        "monotone for each rule's own KL loss",
        "mechanisms.md §1.1 (derived)",
        1,
    ),
    p(
        "T5",
        "two-token log-linear is robust monotone",
        "mechanisms.md §1.2 (derived)",
        1,
    ),
    p(
        "T6",
        "aggregates minimise the bid-weighted loss",
        "DMPXZ24 / mechanisms.md §1.1",
        1,
    ),
    p(
        "T7",
        "log-linear = normalised geometric mean",
        "mechanisms.md §1.1 (derived)",
        1,
    ),
    p(
        "T8",
        "zero bid has no influence; all-zero errors",
        "mechanisms.md §1.1",
        1,
    ),
    p(
        "T9",
        "stable samplers draw from p(q,b) (2e5 seeds)",
        "mechanisms.md §1.3 B, C",
        100,
    ),
    p(
        "T10",
        "stability: at most one switch, toward i",
        "DMPXZ24 s.4 / mechanisms.md §1.3",
        4,
    ),
    p(
        "T11",
        "second price = bisected critical bid",
        "mechanisms.md §1.3 (Myerson)",
        2,
    ),
    p(
        "T12",
        "closed-form thresholds = bisection",
        "mechanisms.md §1.3 C",
        1,
    ),
    p(
        "T13",
        "Myerson expected payment (4e5 seeds)",
        "mechanisms.md §1.3 B",
        200,
    ),
    p(
        "T14",
        "bidding one's value is optimal",
        "mechanisms.md §1.3 (derived)",
        4,
    ),
    p(
        "T15",
        "E[spend] = sum of Myerson payments; replay",
        "mechanisms.md §1.3 (Myerson)",
        20,
    ),
];

#[test]
fn catalog_lists_every_property_once() {
    let ids: Vec<&str> = CATALOG.iter().map(|p| p.id).collect();
    let expected: Vec<String> = (1..=18)
        .map(|k| format!("M{k}"))
        .chain((1..=15).map(|k| format!("T{k}")))
        .collect();
    assert_eq!(ids, expected);
}
