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
    info(title = "Tollgate", description = "License and entitlement server. Errors are RFC 9457 problem+json with a stable `code`. Every POST honours `Idempotency-Key`."),
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
        api::ledger::checkpoint, api::ledger::key, api::ledger::entries, api::ledger::inclusion, api::ledger::consistency,
        api::system::create_token, api::system::list_tokens, api::system::revoke_token,
    ),
    components(schemas(crate::problem::Problem, crate::auth::Role)),
    modifiers(&Bearer)
)]
pub struct ApiDoc;
