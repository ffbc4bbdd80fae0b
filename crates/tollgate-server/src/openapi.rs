//! The OpenAPI document, generated from the handlers' annotations.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::api;

struct Bearer;

impl Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Tollgate", description = "License and entitlement server. Errors are RFC 9457 problem+json with a stable `code`. Every POST honours `Idempotency-Key`. Every response carries `Tollgate-Seq`, the ledger sequence it reflects; send `Tollgate-Min-Seq: N` to wait (at most 5 s) until the answering node has reached N, for read-your-writes across nodes: 503 `SEQ_NOT_REACHED` with `Retry-After` if it does not. A write refused because other nodes kept appending first is 503 `LEDGER_CONTENDED` with `Retry-After`; nothing was written. A write the store refused is 503 `LEDGER_UNAVAILABLE` with `Retry-After`; nothing was written. 503 `WRITE_UNCONFIRMED`: the store reported an error and could not be read back, so the write may be recorded; retry it with the same `Idempotency-Key`."),
    paths(
        api::system::healthz, api::system::readyz,
        api::catalog::create_product, api::catalog::update_product, api::catalog::list_products, api::catalog::get_product,
        api::catalog::create_plan, api::catalog::update_plan, api::catalog::list_plans, api::catalog::get_plan,
        api::licenses::issue, api::licenses::get, api::licenses::list,
        api::licenses::suspend, api::licenses::reinstate, api::licenses::revoke, api::licenses::renew, api::licenses::change_plan,
        api::validate::validate,
        api::machines::activate, api::machines::deactivate, api::machines::list,
        api::machines::assign, api::machines::unassign, api::machines::users,
        api::leases::checkout, api::leases::heartbeat, api::leases::release, api::leases::list,
        api::usage::record, api::entitlements::entitlements, api::entitlements::set_overrides,
        api::keys::jwks, api::keys::list, api::keys::rotate, api::license_tokens::issue, api::revocations::feed,
        api::offline::activate, api::offline::deactivate,
        api::events::list,
        api::import::licenses,
        api::gates::list, api::gates::get, api::gates::put, api::gates::history, api::gates::rollback, api::gates::kill,
        api::gates::preview, api::gates::import, api::gates::ruleset,
        api::ofrep::evaluate_one, api::ofrep::evaluate_all,
        api::ledger::checkpoint, api::ledger::key, api::ledger::entries, api::ledger::inclusion, api::ledger::consistency,
        api::system::create_token, api::system::list_tokens, api::system::revoke_token,
        crate::cluster::status,
    ),
    components(schemas(crate::problem::Problem, crate::auth::Role)),
    modifiers(&Bearer)
)]
pub struct ApiDoc;
