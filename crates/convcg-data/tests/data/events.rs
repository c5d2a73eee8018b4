//! Events for the hand-made logs of the tests: each constructor takes what the tests vary and
//! leaves the rest empty (no position, context pin or query, no dwell time, no value).

use convcg_data::{Conversion, ConversionKind, Engagement, EngagementKind, Impression, Surface};

/// Impression `id` of request `request`: `pin` shown to `user` at `ts` on `surface`.
pub fn impression(
    id: i64,
    request: i64,
    ts: i64,
    user: i64,
    pin: i64,
    surface: Surface,
) -> Impression {
    Impression {
        impression_id: id,
        request_id: request,
        ts,
        user_id: user,
        pin_id: pin,
        surface,
        position: None,
        context_pin_id: None,
        query_id: None,
    }
}

/// A `kind` engagement with impression `impression_id` at `ts`.
pub fn engagement(impression_id: i64, ts: i64, kind: EngagementKind) -> Engagement {
    Engagement {
        impression_id,
        ts,
        kind,
        duration_s: None,
    }
}

/// A purchase of `pin_id` by `user_id` at `ts`.
pub fn purchase(ts: i64, user_id: i64, pin_id: i64) -> Conversion {
    Conversion {
        ts,
        user_id,
        pin_id,
        kind: ConversionKind::Purchase,
        value: None,
    }
}
