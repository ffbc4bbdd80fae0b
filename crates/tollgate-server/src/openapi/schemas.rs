//! Schemas of the core's types as the API reads and writes them. The core stays free
//! of HTTP and documentation crates, so these mirror its serde shapes here; the
//! schemathesis run in `.ci/run` checks every response against them, and the contract
//! tests send what they describe, so a drift fails CI.

#![expect(dead_code, reason = "schema-only types: never built, only described")]

use utoipa::ToSchema;

/// A key: 1 to 64 characters, lowercase letters, digits, `-`, `_` or `.`, starting with
/// a letter or digit.
pub const KEY_PATTERN: &str = "^[a-z0-9][a-z0-9._-]{0,63}$";

#[derive(ToSchema)]
#[schema(as = Feature)]
pub struct Feature {
    #[schema(pattern = "^[a-z0-9][a-z0-9._-]{0,63}$", example = "render.gpu")]
    key: String,
    #[schema(example = "GPU rendering")]
    name: String,
}

/// What `POST /v1/products` and `PUT /v1/products/{key}` take.
#[derive(ToSchema)]
#[schema(as = ProductSpec)]
pub struct ProductSpec {
    #[schema(pattern = "^[a-z0-9][a-z0-9._-]{0,63}$", example = "acme-cad")]
    key: String,
    #[schema(example = "Acme CAD")]
    name: String,
    #[schema(required = false)]
    features: Vec<Feature>,
}

/// A product as stored: its spec, with a version (1 on creation, +1 on every update).
#[derive(ToSchema)]
#[schema(as = Product)]
pub struct Product {
    #[serde(flatten)]
    spec: ProductSpec,
    #[serde(flatten)]
    versioned: Versioned,
}

/// Concurrent leases (floating licenses).
#[derive(ToSchema)]
#[schema(as = Floating)]
pub struct Floating {
    #[schema(minimum = 1)]
    max_leases: u32,
    #[schema(minimum = 1)]
    lease_ttl_seconds: u32,
}

#[derive(ToSchema)]
#[schema(as = Period)]
#[serde(rename_all = "lowercase")]
pub enum Period {
    Day,
    Month,
    Total,
}

#[derive(ToSchema)]
#[schema(as = OverageMode)]
#[serde(rename_all = "lowercase")]
pub enum OverageMode {
    Block,
    Allow,
}

/// `"block"` (the default), `"allow"`, or `{"allow_percent": N}`: up to N% over quota.
#[derive(ToSchema)]
#[schema(as = Overage)]
#[serde(untagged)]
pub enum Overage {
    Mode(OverageMode),
    Percent { allow_percent: u32 },
}

/// A metered quota of a plan.
#[derive(ToSchema)]
#[schema(as = Meter)]
pub struct Meter {
    #[schema(pattern = "^[a-z0-9][a-z0-9._-]{0,63}$", example = "exports")]
    key: String,
    quota: u64,
    period: Period,
    #[schema(required = false, default = "block")]
    overage: Overage,
}

/// What `POST /v1/plans` and `PUT /v1/plans/{key}` take. Absent limits are unlimited;
/// absent `duration_days` is perpetual.
#[derive(ToSchema)]
#[schema(as = PlanSpec)]
pub struct PlanSpec {
    #[schema(pattern = "^[a-z0-9][a-z0-9._-]{0,63}$", example = "cad-pro")]
    key: String,
    #[schema(pattern = "^[a-z0-9][a-z0-9._-]{0,63}$", example = "acme-cad")]
    product: String,
    #[schema(example = "CAD Pro")]
    name: String,
    /// Keys of the product's features this plan grants.
    #[schema(required = false)]
    features: Vec<String>,
    duration_days: Option<u32>,
    trial_days: Option<u32>,
    grace_days: Option<u32>,
    /// How long an offline token lasts; absent: no offline tokens on this plan.
    offline_days: Option<u32>,
    max_machines: Option<u32>,
    max_users: Option<u32>,
    floating: Option<Floating>,
    #[schema(required = false)]
    meters: Vec<Meter>,
}

/// A plan as stored: its spec, with a version.
#[derive(ToSchema)]
#[schema(as = Plan)]
pub struct Plan {
    #[serde(flatten)]
    spec: PlanSpec,
    #[serde(flatten)]
    versioned: Versioned,
}

/// What every stored catalog entry carries besides its spec.
#[derive(ToSchema)]
#[schema(as = Versioned)]
pub struct Versioned {
    /// 1 on creation, +1 on every update.
    version: u64,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(format = DateTime)]
    updated_at: String,
}

/// Per-license changes to its plan; every field may be left out.
#[derive(ToSchema)]
#[schema(as = Overrides)]
pub struct Overrides {
    #[schema(required = false)]
    features_add: Vec<String>,
    #[schema(required = false)]
    features_remove: Vec<String>,
    max_leases: Option<u32>,
    max_machines: Option<u32>,
    max_users: Option<u32>,
    /// Replaces the quota of the plan's meter of that key.
    #[schema(required = false)]
    quotas: std::collections::BTreeMap<String, u64>,
}

#[derive(ToSchema)]
#[schema(as = ProductList)]
pub struct ProductList {
    items: Vec<Product>,
}

#[derive(ToSchema)]
#[schema(as = PlanList)]
pub struct PlanList {
    items: Vec<Plan>,
}

/// What `POST /v1/licenses/{id}/machines` takes.
#[derive(ToSchema)]
#[schema(as = MachineSpec)]
pub struct MachineSpec {
    /// 1 to 256 bytes of visible ASCII, computed by the client (a hash of hardware ids).
    #[schema(pattern = "^[!-~]{1,256}$", example = "4f9c2a7e1b")]
    fingerprint: String,
    name: Option<String>,
    #[schema(required = false)]
    components: Vec<String>,
}
