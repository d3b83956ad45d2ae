//! Products and bids: `POST /api/products`, `GET /api/products/{id}`,
//! `POST /api/products/{id}/bids` (202: durable, decided exactly once),
//! `GET /api/bids/{id}`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::access::{self, Caller};
use super::doc::{
    BadRequest, BodyTooLarge, Conflict, Forbidden, HeadTooLarge, NotFound, RequestTimeout,
    TenantParam, TooManyRequests, Unauthorized, Unavailable, UnsupportedMediaType,
};
use super::extract::{stored_text, AppJson, QueryPairs};
use crate::bids::{new_id, Bid, BidStatus, Product};
use crate::error::ApiError;
use crate::event::now_ms;
use crate::state::AppState;

/// The body of `POST /api/products`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewProduct {
    /// Only with the admin token; a client token names its tenant.
    #[serde(default)]
    #[schema(
        value_type = String,
        min_length = 1,
        max_length = 63,
        pattern = "^[a-z0-9][a-z0-9-]*$"
    )]
    tenant: Option<String>,
    #[schema(min_length = 1, max_length = 128, pattern = "^[A-Za-z0-9._@-]+$")]
    seller_id: String,
    #[schema(min_length = 1, max_length = 200)]
    title: String,
    /// Minor units.
    #[schema(minimum = 1)]
    starting_price: i64,
    /// Minor units.
    #[schema(minimum = 1)]
    min_increment: i64,
    /// In the future, ms since the Unix epoch; null or absent: no end.
    #[serde(default)]
    ends_at: Option<i64>,
    /// A bid this close to the end extends it by as much (0: off).
    #[serde(default)]
    #[schema(minimum = 0, maximum = 3600)]
    anti_snipe_secs: Option<i64>,
}

/// Creates a product (the seller's token or the admin token).
#[utoipa::path(
    post,
    path = "/api/products",
    operation_id = "createProduct",
    tag = "products",
    summary = "Creates a product (the seller's client token, or the admin token with `tenant`).",
    security(
        ("adminToken" = []),
        ("clientToken" = []),
        ("tokenCookie" = []),
        ("tokenQuery" = [])
    ),
    request_body(
        content = NewProduct,
        example = json!({"tenant": "demo", "seller_id": "alice", "title": "Lamp", "starting_price": 1000, "min_increment": 50})
    ),
    responses(
        (status = 201, description = "Created.", body = Product),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 408, response = RequestTimeout),
        (status = 413, response = BodyTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 429, response = TooManyRequests),
        (status = 431, response = HeadTooLarge),
        (status = 503, response = Unavailable),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    AppJson(b): AppJson<NewProduct>,
) -> Result<Response, ApiError> {
    state.rate.check(caller.rate_key(), &state.metrics)?;
    let tenant = access::tenant(&state, &caller, b.tenant.as_deref(), "tenant").await?;
    access::validate_user_id(&b.seller_id, "seller_id")?;
    access::may_act_as(&b.seller_id, &caller)?;
    let title = b.title.trim();
    stored_text(title, "title")?;
    if title.is_empty() || title.chars().count() > 200 {
        return Err(ApiError::invalid(
            "invalid_title",
            "`title` must be 1-200 characters",
        ));
    }
    if b.starting_price < 1 {
        return Err(ApiError::invalid(
            "invalid_starting_price",
            "`starting_price` must be a positive integer (minor units)",
        ));
    }
    if b.min_increment < 1 {
        return Err(ApiError::invalid(
            "invalid_min_increment",
            "`min_increment` must be a positive integer (minor units)",
        ));
    }
    let now = now_ms();
    if b.ends_at.is_some_and(|e| e <= now) {
        return Err(ApiError::invalid(
            "invalid_ends_at",
            "`ends_at` must be in the future (ms since the epoch)",
        ));
    }
    let anti_snipe_ms = b.anti_snipe_secs.unwrap_or(0);
    if !(0..=3600).contains(&anti_snipe_ms) {
        return Err(ApiError::invalid(
            "invalid_anti_snipe_secs",
            "`anti_snipe_secs` must be between 0 and 3600",
        ));
    }
    let p = Product {
        id: new_id("p"),
        tenant: tenant.slug,
        seller_id: b.seller_id,
        title: title.to_string(),
        starting_price: b.starting_price,
        min_increment: b.min_increment,
        anti_snipe_ms: anti_snipe_ms * 1000,
        ends_at: b.ends_at,
        status: crate::bids::ProductStatus::Open,
        current_bid: None,
        leader: None,
        bid_count: 0,
        version: 1,
        created_at: now,
    };
    state.backend.bids.create_product(&p).await?;
    Ok((StatusCode::CREATED, axum::Json(p)).into_response())
}

/// Looks a product up within the request's tenant (another tenant's is 404).
pub async fn visible_product(
    state: &AppState,
    caller: &Caller,
    id: &str,
    requested: Option<&str>,
) -> Result<Product, ApiError> {
    let unknown =
        || ApiError::not_found("unknown_product", format!("product {id:?} does not exist"));
    // Ids are made by the server (`p_…`); what could not be one is not looked up.
    if !crate::auth::valid_user_id(id) {
        return Err(unknown());
    }
    let p = state.backend.bids.product(id).await?.ok_or_else(unknown)?;
    let tenant = match caller {
        Caller::User(c) => Some(c.tenant.as_str()),
        Caller::Service(c) => Some(c.tenant.as_str()),
        _ => requested,
    };
    if tenant.is_some_and(|t| t != p.tenant) {
        return Err(unknown());
    }
    Ok(p)
}

/// A product's current state.
#[utoipa::path(
    get,
    path = "/api/products/{id}",
    operation_id = "getProduct",
    tag = "products",
    summary = "A product's current state.",
    description = "Another tenant's product is a 404.",
    security(
        (),
        ("adminToken" = []),
        ("clientToken" = []),
        ("publisherToken" = []),
        ("tokenCookie" = []),
        ("tokenQuery" = [])
    ),
    params(("id" = String, Path), TenantParam),
    responses(
        (status = 200, description = "The product.", body = Product),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
        (status = 431, response = HeadTooLarge),
        (status = 503, response = Unavailable),
    )
)]
pub async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
    caller: Caller,
    q: QueryPairs,
) -> Result<Response, ApiError> {
    let p = visible_product(&state, &caller, &id, q.get("tenant")).await?;
    Ok(axum::Json(p).into_response())
}

/// The body of `POST /api/products/{id}/bids`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewBid {
    #[schema(min_length = 1, max_length = 128, pattern = "^[A-Za-z0-9._@-]+$")]
    bidder_id: String,
    /// Minor units.
    #[schema(minimum = 1)]
    amount: i64,
    /// The same key with the same bid answers the bid stored first; with
    /// another bid, 409.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 128)]
    idempotency_key: Option<String>,
}

/// What `POST /api/products/{id}/bids` answers.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BidQueued {
    bid_id: String,
    /// `queued` for a new bid; a retry with its idempotency key may find it
    /// decided.
    status: BidStatus,
}

/// Queues a bid: `202 {bid_id, status}` once it is stored.
#[utoipa::path(
    post,
    path = "/api/products/{id}/bids",
    operation_id = "placeBid",
    tag = "products",
    summary = "Places a bid (the bidder's client token): 202 once it is durable; it is decided exactly once.",
    description = "Follow it with `GET /api/bids/{id}` or the product's stream.",
    security(
        ("adminToken" = []),
        ("clientToken" = []),
        ("tokenCookie" = []),
        ("tokenQuery" = [])
    ),
    params(("id" = String, Path)),
    request_body(
        content = NewBid,
        example = json!({"bidder_id": "bob", "amount": 1100, "idempotency_key": "bob-lamp-1"})
    ),
    responses(
        (status = 202, description = "Queued.", body = BidQueued),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 408, response = RequestTimeout),
        (status = 409, response = Conflict),
        (status = 413, response = BodyTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 429, response = TooManyRequests),
        (status = 431, response = HeadTooLarge),
        (status = 503, response = Unavailable),
    )
)]
pub async fn bid(
    State(state): State<AppState>,
    Path(id): Path<String>,
    caller: Caller,
    AppJson(b): AppJson<NewBid>,
) -> Result<Response, ApiError> {
    if caller == Caller::Anonymous {
        return Err(ApiError::unauthorized("bidding needs the bidder's token"));
    }
    access::validate_user_id(&b.bidder_id, "bidder_id")?;
    access::may_act_as(&b.bidder_id, &caller)?;
    state.rate.check(caller.rate_key(), &state.metrics)?;
    if b.amount < 1 {
        return Err(ApiError::invalid(
            "invalid_amount",
            "`amount` must be a positive integer (minor units)",
        ));
    }
    if let Some(k) = &b.idempotency_key {
        stored_text(k, "idempotency_key")?;
        if k.is_empty() || k.len() > 128 {
            return Err(ApiError::invalid(
                "invalid_idempotency_key",
                "`idempotency_key` must be 1-128 characters",
            ));
        }
    }
    let p = visible_product(&state, &caller, &id, None).await?;
    let bid = Bid {
        id: new_id("b"),
        tenant: p.tenant.clone(),
        product_id: p.id.clone(),
        bidder_id: b.bidder_id,
        amount: b.amount,
        idempotency_key: b.idempotency_key,
        status: crate::bids::BidStatus::Queued,
        reason: None,
        decided_by: None,
        created_at: now_ms(),
        decided_at: None,
    };
    let (stored, created) = state.backend.bids.submit_bid(&bid).await?;
    if created {
        state.metrics.bids_submitted.inc();
        state.bid_queue.wake(&p.id).await;
    }
    let body = BidQueued {
        bid_id: stored.id,
        status: stored.status,
    };
    Ok((StatusCode::ACCEPTED, axum::Json(body)).into_response())
}

/// A bid and its status (the bidder or the admin).
#[utoipa::path(
    get,
    path = "/api/bids/{id}",
    operation_id = "getBid",
    tag = "products",
    summary = "A bid and its status (the bidder or the admin).",
    security(
        ("adminToken" = []),
        ("clientToken" = []),
        ("tokenCookie" = []),
        ("tokenQuery" = [])
    ),
    params(("id" = String, Path)),
    responses(
        (status = 200, description = "The bid.", body = Bid),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 431, response = HeadTooLarge),
        (status = 503, response = Unavailable),
    )
)]
pub async fn get_bid(
    State(state): State<AppState>,
    Path(id): Path<String>,
    caller: Caller,
) -> Result<Response, ApiError> {
    let unknown = || ApiError::not_found("unknown_bid", format!("bid {id:?} does not exist"));
    // Ids are made by the server (`b_…`); what could not be one is not looked up.
    if !crate::auth::valid_user_id(&id) {
        return Err(unknown());
    }
    // Answers name nobody: a stranger learns neither who placed a bid nor,
    // without a token, whether it exists.
    match &caller {
        Caller::Anonymous => {
            return Err(ApiError::unauthorized(
                "a bid's status needs its bidder's token",
            ))
        }
        Caller::Service(_) => {
            return Err(ApiError::forbidden(
                "a publisher token cannot read a bid's status",
            ))
        }
        Caller::Admin | Caller::User(_) => {}
    }
    let bid = state.backend.bids.bid(&id).await?.ok_or_else(unknown)?;
    match &caller {
        Caller::User(c) if c.tenant != bid.tenant => return Err(unknown()),
        Caller::User(c) if c.sub != bid.bidder_id => {
            return Err(ApiError::forbidden(
                "only its bidder may read a bid's status",
            ))
        }
        _ => {}
    }
    Ok(axum::Json(bid).into_response())
}
