//! The scripted scenario: stock arrives, four customers order, three pay, two orders ship,
//! one cannot be reserved and is cancelled with its stock released, one paid order is
//! cancelled and refunded. Then the read models and one order's event stream are printed.

use std::fmt::Write as _;

use factum::{Coordination, EventStore};

use crate::app::{App, AppError, NewOrder};
use crate::domain::Line;

fn line(sku: &str, quantity: u32, unit_price_cents: u64) -> Line {
    Line {
        sku: sku.into(),
        quantity,
        unit_price_cents,
    }
}

fn order(id: &str, customer: &str, lines: Vec<Line>, currency: Option<&str>) -> NewOrder {
    NewOrder {
        order_id: Some(id.into()),
        customer_id: customer.into(),
        lines,
        currency: currency.map(Into::into),
        customer_name: None,
    }
}

/// Formats cents as units with two decimals.
pub fn money(cents: u64) -> String {
    format!("{}.{:02}", cents / 100, cents % 100)
}

fn signed_money(cents: i64) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    format!("{sign}{}", money(cents.unsigned_abs()))
}

// ANCHOR: scenario
/// Runs the scenario on `app` and returns what it prints. On a store where it ran before, it
/// only prints the read models.
///
/// Each step waits for the fulfillment process and the projections to settle, so the output
/// is the same on every run and every store (positions aside).
pub async fn run<S: EventStore, C: Coordination>(app: &App<S, C>) -> Result<String, AppError> {
    if app.history("o-1001").await.is_ok() {
        // A database the demo ran on before: show what it holds.
        app.settle().await?;
        let report = report(app).await?;
        return Ok(format!(
            "(the demo ran on this store before: these are its read models as they stand)\n\n{report}"
        ));
    }
    for (sku, quantity) in [("keyboard", 10), ("mouse", 25), ("monitor", 2)] {
        app.receive_stock(sku, quantity, None).await?;
    }
    let orders = [
        // Version 1 of the command: prices in euros.
        order(
            "o-1001",
            "alice",
            vec![line("keyboard", 1, 4_999), line("mouse", 2, 1_999)],
            None,
        ),
        // Version 2: any currency.
        order(
            "o-1002",
            "bob",
            vec![line("monitor", 1, 18_900)],
            Some("USD"),
        ),
        order(
            "o-1003",
            "alice",
            vec![line("mouse", 1, 1_999)],
            Some("EUR"),
        ),
        // Two monitors asked, one left: the keyboard is reserved, then released.
        order(
            "o-1004",
            "carol",
            vec![line("keyboard", 1, 4_999), line("monitor", 2, 18_900)],
            Some("EUR"),
        ),
    ];
    for new in orders {
        app.place_order(new, None).await?;
    }
    app.settle().await?;
    for id in ["o-1001", "o-1002", "o-1003"] {
        app.pay(id, None, None).await?;
    }
    app.settle().await?;
    app.ship("o-1001", "dhl", None).await?;
    app.ship("o-1002", "ups", None).await?;
    app.cancel("o-1003", "changed my mind", None, None).await?;
    app.settle().await?;
    report(app).await
}
// ANCHOR_END: scenario

/// The read models, customer statistics, daily sales, stock and the event stream of one
/// order, as the demo prints them.
pub async fn report<S: EventStore, C: Coordination>(app: &App<S, C>) -> Result<String, AppError> {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = writeln!(out, "== Orders");
    let _ = writeln!(
        out,
        "{:<8} {:<8} {:<10} {:>10} {:<4} note",
        "order", "customer", "status", "total", "cur"
    );
    for o in app.orders().await? {
        let note = o
            .tracking
            .clone()
            .map(|t| format!("tracking {t}"))
            .or(o.cancel_reason.clone())
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "{:<8} {:<8} {:<10} {:>10} {:<4} {}",
            o.order_id,
            o.customer_id,
            o.status,
            money(o.total_cents),
            o.currency,
            note
        );
    }
    let _ = writeln!(out, "\n== Customers");
    for c in app.customers().await? {
        let spent: Vec<String> = c
            .total_spent_cents
            .iter()
            .map(|(cur, cents)| format!("{} {cur}", money(*cents)))
            .collect();
        let spent = if spent.is_empty() {
            "nothing".to_owned()
        } else {
            spent.join(", ")
        };
        let _ = writeln!(
            out,
            "{:<8} orders {}  spent {spent}",
            c.customer_id, c.order_count
        );
    }
    let _ = writeln!(out, "\n== Daily sales");
    for d in app.daily_sales().await? {
        let _ = writeln!(
            out,
            "{} {}  payments {}  refunds {}  net {}",
            d.day,
            d.currency,
            d.payments,
            d.refunds,
            signed_money(d.net_cents)
        );
    }
    let _ = writeln!(out, "\n== Stock");
    for sku in ["keyboard", "monitor", "mouse"] {
        let s = app.stock(sku).await?;
        let _ = writeln!(
            out,
            "{:<8}  on hand {:>2}  reserved {:>2}  available {:>2}",
            s.sku, s.on_hand, s.reserved, s.available
        );
    }
    let _ = writeln!(out, "\n== Event stream order-o-1001");
    for e in app.history("o-1001").await? {
        let _ = writeln!(
            out,
            "#{} {} v{} @{} {}",
            e.stream_version, e.event_type, e.schema_version, e.position, e.payload
        );
    }
    Ok(out)
}
