//! Seed 004 (ticketing): the payment transactions of a ticketing platform's customers at its
//! venues over two years — purchases, refunds, failed payments — and the RFM segment names.
//!
//! Customers are loyal (buying until recently), lapsed (stopped a while ago) or one-off, so
//! recency, frequency and value spread over every quintile and churn-risk level. Amounts are
//! cents.

use super::common::{DAY, Files, HOUR, Rng, money, n, object, rfc3339, s};

/// Decimals of amounts.
pub(crate) const SCALE: u32 = 2;

pub(crate) struct Venue {
    pub(crate) id: String,
    pub(crate) name: &'static str,
    pub(crate) city: &'static str,
}

pub(crate) struct Payment {
    pub(crate) id: String,
    pub(crate) customer_id: String,
    pub(crate) venue_id: String,
    pub(crate) event_id: String,
    /// `purchase` or `refund`.
    pub(crate) kind: &'static str,
    /// `completed` or `failed`.
    pub(crate) status: &'static str,
    pub(crate) ticket_count: i64,
    /// In cents, positive for refunds too.
    pub(crate) amount: i64,
    pub(crate) at: i64,
}

pub(crate) struct Data {
    pub(crate) venues: Vec<Venue>,
    pub(crate) payments: Vec<Payment>,
    /// The `rfm_segments` table: (recency score, frequency score) → segment name.
    pub(crate) segments: Vec<(String, &'static str)>,
}

/// The classic RFM segment of a recency score and a frequency score (1–5 each).
pub(crate) fn segment(r: i64, f: i64) -> &'static str {
    match (r, f) {
        (5, 4..=5) => "champions",
        (3..=4, 4..=5) => "loyal customers",
        (1..=2, 5) => "cannot lose them",
        (1..=2, 3..=4) => "at risk",
        (1..=2, 1..=2) => "hibernating",
        (3, 3) => "need attention",
        (3, 1..=2) => "about to sleep",
        (4, 1) => "promising",
        (5, 1) => "new customers",
        _ => "potential loyalists",
    }
}

const CUSTOMERS: usize = 320;

pub(crate) fn generate(now: i64) -> Data {
    let mut rng = Rng::new(0x0004_71c4_e75e);
    let venues = vec![
        Venue {
            id: "vn-1".into(),
            name: "Harbour Arena",
            city: "Lisbon",
        },
        Venue {
            id: "vn-2".into(),
            name: "The Foundry",
            city: "Porto",
        },
        Venue {
            id: "vn-3".into(),
            name: "Open Air Park",
            city: "Faro",
        },
    ];
    let mut payments = Vec::new();
    for c in 0..CUSTOMERS {
        let customer_id = format!("c-{:04}", c + 1);
        let home = rng.pick(&venues).id.clone();
        let first = now - rng.range(5 * DAY, 730 * DAY);
        // Until when the customer buys, and how often.
        let (until, gap) = match rng.range(0, 100) {
            0..45 => (now, rng.range(15 * DAY, 90 * DAY)),
            45..80 if first < now - 30 * DAY => (
                rng.range(first, now - 30 * DAY),
                rng.range(20 * DAY, 120 * DAY),
            ),
            _ => (first, DAY),
        };
        let mut at = first;
        while at <= until && at < now {
            let venue = if rng.chance(80) {
                home.clone()
            } else {
                rng.pick(&venues).id.clone()
            };
            let tickets = rng.range(1, 6);
            let amount = tickets * rng.range(1_500, 25_000);
            let event_id = format!("ev-{venue}-{}", at / (7 * DAY));
            let mut payment = |kind, status, amount, at| {
                let id = format!("tx-{:06}", payments.len() + 1);
                payments.push(Payment {
                    id,
                    customer_id: customer_id.clone(),
                    venue_id: venue.clone(),
                    event_id: event_id.clone(),
                    kind,
                    status,
                    ticket_count: tickets,
                    amount,
                    at,
                });
            };
            if rng.chance(5) {
                // A declined card, then the purchase goes through.
                payment("purchase", "failed", amount, at - rng.range(60, HOUR));
            }
            payment("purchase", "completed", amount, at);
            if rng.chance(8) {
                let refund_at = at + rng.range(HOUR, 10 * DAY);
                if refund_at < now {
                    let refunded = if rng.chance(50) { amount } else { amount / 2 };
                    payment("refund", "completed", refunded, refund_at);
                }
            }
            at += gap + rng.range(0, gap / 2 + 1);
        }
    }
    let segments = (1..=5)
        .flat_map(|r| (1..=5).map(move |f| (format!("{r}{f}"), segment(r, f))))
        .collect();
    Data {
        venues,
        payments,
        segments,
    }
}

impl Data {
    /// The files `run.sh` loads: the `payment_transactions` stream, the `venues` and
    /// `rfm_segments` tables.
    pub(crate) fn files(&self) -> Files {
        let mut files = Files::default();
        let mut lines: Vec<String> = self
            .payments
            .iter()
            .map(|p| {
                object(&[
                    ("id", s(&p.id)),
                    ("customer_id", s(&p.customer_id)),
                    ("venue_id", s(&p.venue_id)),
                    ("event_id", s(&p.event_id)),
                    ("type", s(p.kind)),
                    ("status", s(p.status)),
                    ("ticket_count", n(p.ticket_count)),
                    ("amount", s(money(p.amount, SCALE))),
                    ("created_at", s(rfc3339(p.at))),
                ])
            })
            .collect();
        Rng::new(0x71c4_e75e).shuffle(&mut lines);
        files.stream("payment_transactions", lines);
        let mut venues = String::from("venue_id,name,city\n");
        for v in &self.venues {
            venues.push_str(&format!("{},{},{}\n", v.id, v.name, v.city));
        }
        files.table("venues", "venues.csv", venues);
        let mut segments = String::from("rf_code,segment\n");
        for (code, name) in &self.segments {
            segments.push_str(&format!("{code},{name}\n"));
        }
        files.table("rfm_segments", "rfm_segments.csv", segments);
        files
    }
}
