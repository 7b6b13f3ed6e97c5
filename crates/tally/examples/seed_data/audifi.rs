//! Seed 001 (AudiFi): artists and their masters (releases), master IPOs and NFT mints, revenue
//! and dividend events, V Studio votes, and the transfers of each artist's token.
//!
//! Token amounts have 4 decimals and USD amounts 2, kept as integers of minor units so that the
//! test recomputes every sum and balance exactly.

use super::common::{DAY, Files, HOUR, MINUTE, Rng, money, n, object, rfc3339, s};

/// Decimals of token amounts.
pub(crate) const TOKEN_SCALE: u32 = 4;
/// Decimals of USD amounts.
pub(crate) const USD_SCALE: u32 = 2;
/// Mints come from, and burns go to, the zero address.
pub(crate) const ZERO_ADDRESS: &str = "0x0000000000000000000000000000000000000000";

pub(crate) struct Artist {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) genre: &'static str,
}

pub(crate) struct Token {
    pub(crate) id: String,
    pub(crate) artist_id: String,
    pub(crate) symbol: String,
}

/// A row of `master_events`: a master created, its IPO launched, or NFTs of it minted.
pub(crate) struct MasterEvent {
    pub(crate) id: String,
    pub(crate) event_type: &'static str,
    pub(crate) artist_id: String,
    pub(crate) master_id: String,
    pub(crate) ipo_id: Option<String>,
    pub(crate) quantity: Option<i64>,
    pub(crate) at: i64,
}

pub(crate) struct Revenue {
    pub(crate) id: String,
    pub(crate) artist_id: String,
    pub(crate) master_id: String,
    /// In cents.
    pub(crate) amount: i64,
    pub(crate) status: &'static str,
    pub(crate) at: i64,
}

pub(crate) struct Dividend {
    pub(crate) id: String,
    pub(crate) artist_id: String,
    pub(crate) master_id: String,
    pub(crate) event_type: &'static str,
    /// In cents.
    pub(crate) amount: i64,
    pub(crate) at: i64,
}

pub(crate) struct Vote {
    pub(crate) id: String,
    pub(crate) session_id: String,
    pub(crate) artist_id: String,
    pub(crate) voter: String,
    pub(crate) at: i64,
}

pub(crate) struct Transfer {
    pub(crate) id: String,
    pub(crate) token_id: String,
    pub(crate) from: String,
    pub(crate) to: String,
    /// In 1/10,000 of a token.
    pub(crate) amount: i64,
    pub(crate) tx_hash: String,
    pub(crate) at: i64,
}

pub(crate) struct Data {
    pub(crate) artists: Vec<Artist>,
    pub(crate) tokens: Vec<Token>,
    pub(crate) master_events: Vec<MasterEvent>,
    pub(crate) revenue: Vec<Revenue>,
    pub(crate) dividends: Vec<Dividend>,
    pub(crate) votes: Vec<Vote>,
    pub(crate) transfers: Vec<Transfer>,
    /// Transfers sent twice: Tally counts them once.
    pub(crate) duplicates: usize,
}

const GENRES: [&str; 6] = [
    "pop",
    "rock",
    "afrobeats",
    "classical",
    "electronic",
    "jazz",
];

const NAMES: [&str; 8] = [
    "Nova Reyes",
    "The Velvet Static",
    "Kofi Mensah",
    "Luna Park Orchestra",
    "DJ Marrow",
    "Ines Carvalho",
    "Echo Atlas",
    "Saffron Hill",
];

pub(crate) fn generate(now: i64) -> Data {
    let mut rng = Rng::new(0x0001_a0d1_f1f1);
    let wallets: Vec<String> = (0..50).map(|_| format!("0x{}", rng.hex(40))).collect();
    let mut data = Data {
        artists: Vec::new(),
        tokens: Vec::new(),
        master_events: Vec::new(),
        revenue: Vec::new(),
        dividends: Vec::new(),
        votes: Vec::new(),
        transfers: Vec::new(),
        duplicates: 3,
    };
    for (i, name) in NAMES.iter().enumerate() {
        let artist_id = format!("ar-{:02}", i + 1);
        data.artists.push(Artist {
            id: artist_id.clone(),
            name: (*name).to_owned(),
            genre: GENRES[rng.range(0, GENRES.len() as i64) as usize],
        });
        // The last artist has just signed up: nothing yet. The one before has a token nobody
        // holds yet and no V Studio sessions.
        let is_new = i == NAMES.len() - 1;
        let no_sessions = i == NAMES.len() - 2;
        if is_new {
            continue;
        }
        for t in 0..if i == 0 { 2 } else { 1 } {
            let symbol: String = name
                .chars()
                .filter(char::is_ascii_alphabetic)
                .take(4)
                .collect::<String>()
                .to_ascii_uppercase();
            let token = Token {
                id: format!("tk-{:02}{}", i + 1, ["", "b"][t]),
                artist_id: artist_id.clone(),
                symbol: format!("{symbol}{}", ["", "2"][t]),
            };
            if !no_sessions {
                data.transfers
                    .extend(token_transfers(&mut rng, &token.id, &wallets, now));
            }
            data.tokens.push(token);
        }
        for m in 0..rng.range(1, 6) {
            let master_id = format!("ms-{:02}-{m}", i + 1);
            let created = now - rng.range(30 * DAY, 400 * DAY);
            let mut event = |event_type, ipo_id: Option<String>, quantity, at| {
                let seq = data.master_events.len();
                data.master_events.push(MasterEvent {
                    id: format!("me-{seq:05}"),
                    event_type,
                    artist_id: artist_id.clone(),
                    master_id: master_id.clone(),
                    ipo_id,
                    quantity,
                    at,
                });
            };
            event("master_created", None, None, created);
            let ipo_at = created + rng.range(DAY, 20 * DAY);
            let has_ipo = rng.chance(70);
            if has_ipo {
                let ipo_id = format!("ipo-{master_id}");
                event("ipo_launched", Some(ipo_id.clone()), None, ipo_at);
                for _ in 0..rng.range(1, 7) {
                    let at = rng.range(ipo_at + MINUTE, now);
                    event(
                        "nft_minted",
                        Some(ipo_id.clone()),
                        Some(rng.range(1, 200)),
                        at,
                    );
                }
            }
            for _ in 0..rng.range(0, 9) {
                let id = format!("rv-{:05}", data.revenue.len());
                data.revenue.push(Revenue {
                    id,
                    artist_id: artist_id.clone(),
                    master_id: master_id.clone(),
                    amount: rng.range(500, 500_000),
                    status: if rng.chance(70) {
                        "distributed"
                    } else {
                        "pending"
                    },
                    at: rng.range(created, now),
                });
            }
            if has_ipo {
                for _ in 0..rng.range(0, 5) {
                    let id = format!("dv-{:05}", data.dividends.len());
                    data.dividends.push(Dividend {
                        id,
                        artist_id: artist_id.clone(),
                        master_id: master_id.clone(),
                        event_type: if rng.chance(60) {
                            "distribution"
                        } else {
                            "claim"
                        },
                        amount: rng.range(1_000, 200_000),
                        at: rng.range(ipo_at, now),
                    });
                }
            }
        }
        if !no_sessions {
            for session in 0..rng.range(1, 5) {
                let session_id = format!("vs-{:02}-{session}", i + 1);
                let start = now - rng.range(2 * DAY, 300 * DAY);
                for _ in 0..rng.range(5, 60) {
                    let id = format!("vote-{:05}", data.votes.len());
                    data.votes.push(Vote {
                        id,
                        session_id: session_id.clone(),
                        artist_id: artist_id.clone(),
                        voter: rng.pick(&wallets).clone(),
                        at: start + rng.range(0, 2 * HOUR),
                    });
                }
            }
        }
    }
    data
}

/// Mints, transfers and burns of one token, keeping every balance non-negative; some transfers
/// move a whole balance, so holders come and go.
fn token_transfers(rng: &mut Rng, token_id: &str, wallets: &[String], now: i64) -> Vec<Transfer> {
    let mut balances: Vec<i64> = vec![0; wallets.len()];
    let mut out = Vec::new();
    let mut at = now - 200 * DAY;
    let operations = rng.range(40, 160);
    for op in 0..operations {
        at += rng.range(10 * MINUTE, DAY);
        let holders: Vec<usize> = (0..wallets.len()).filter(|&w| balances[w] > 0).collect();
        let r = rng.range(0, 100);
        let (from, to, amount) = if op < 8 || holders.is_empty() || r < 20 {
            let to = rng.range(0, wallets.len() as i64) as usize;
            (
                None,
                Some(to),
                rng.range(1, 5_000) * 10_000 + rng.range(0, 10_000),
            )
        } else {
            let from = *rng.pick(&holders);
            let amount = if rng.chance(30) {
                balances[from]
            } else {
                rng.range(1, balances[from] + 1)
            };
            if r < 85 {
                let to = rng.range(0, wallets.len() as i64) as usize;
                (Some(from), Some(to), amount)
            } else {
                (Some(from), None, amount)
            }
        };
        if from == to {
            continue;
        }
        if let Some(f) = from {
            balances[f] -= amount;
        }
        if let Some(t) = to {
            balances[t] += amount;
        }
        let wallet = |w: Option<usize>| w.map_or(ZERO_ADDRESS.to_owned(), |w| wallets[w].clone());
        let tx_hash = format!("0x{}", rng.hex(64));
        out.push(Transfer {
            id: format!("{tx_hash}:{}", rng.range(0, 4)),
            token_id: token_id.to_owned(),
            from: wallet(from),
            to: wallet(to),
            amount,
            tx_hash,
            at,
        });
    }
    out
}

impl Data {
    /// The files `run.sh` loads: five streams and the `artists` and `artist_tokens` tables.
    pub(crate) fn files(&self) -> Files {
        let mut rng = Rng::new(0xa0d1_f11e);
        let mut files = Files::default();
        let mut shuffled = |mut lines: Vec<String>| {
            rng.shuffle(&mut lines);
            lines
        };

        let mut transfers = shuffled(
            self.transfers
                .iter()
                .map(|t| {
                    object(&[
                        ("transfer_id", s(&t.id)),
                        ("artist_token_id", s(&t.token_id)),
                        ("from_wallet", s(&t.from)),
                        ("to_wallet", s(&t.to)),
                        ("amount", s(money(t.amount, TOKEN_SCALE))),
                        ("tx_hash", s(&t.tx_hash)),
                        ("block_timestamp", s(rfc3339(t.at))),
                    ])
                })
                .collect(),
        );
        let again = transfers[..self.duplicates].to_vec();
        transfers.extend(again);
        files.stream("token_transfers", transfers);

        let master_events = shuffled(
            self.master_events
                .iter()
                .map(|e| {
                    object(&[
                        ("event_id", s(&e.id)),
                        ("event_type", s(e.event_type)),
                        ("artist_id", s(&e.artist_id)),
                        ("master_id", s(&e.master_id)),
                        ("ipo_id", e.ipo_id.as_ref().and_then(s)),
                        ("quantity", e.quantity.and_then(n)),
                        ("occurred_at", s(rfc3339(e.at))),
                    ])
                })
                .collect(),
        );
        files.stream("master_events", master_events);

        let revenue = shuffled(
            self.revenue
                .iter()
                .map(|r| {
                    object(&[
                        ("revenue_event_id", s(&r.id)),
                        ("artist_id", s(&r.artist_id)),
                        ("master_id", s(&r.master_id)),
                        ("amount_usd", s(money(r.amount, USD_SCALE))),
                        ("status", s(r.status)),
                        ("occurred_at", s(rfc3339(r.at))),
                    ])
                })
                .collect(),
        );
        files.stream("revenue_events", revenue);

        let dividends = shuffled(
            self.dividends
                .iter()
                .map(|d| {
                    object(&[
                        ("dividend_event_id", s(&d.id)),
                        ("artist_id", s(&d.artist_id)),
                        ("master_id", s(&d.master_id)),
                        ("event_type", s(d.event_type)),
                        ("total_amount", s(money(d.amount, USD_SCALE))),
                        ("occurred_at", s(rfc3339(d.at))),
                    ])
                })
                .collect(),
        );
        files.stream("dividend_events", dividends);

        let votes = shuffled(
            self.votes
                .iter()
                .map(|v| {
                    object(&[
                        ("vote_id", s(&v.id)),
                        ("vstudio_session_id", s(&v.session_id)),
                        ("artist_id", s(&v.artist_id)),
                        ("voter_wallet", s(&v.voter)),
                        ("voted_at", s(rfc3339(v.at))),
                    ])
                })
                .collect(),
        );
        files.stream("vstudio_votes", votes);

        // Tables as JSON arrays (`tally table upsert` reads .json, .csv or NDJSON).
        let artists: Vec<serde_json::Value> = self
            .artists
            .iter()
            .map(
                |a| serde_json::json!({"artist_id": a.id, "artist_name": a.name, "genre": a.genre}),
            )
            .collect();
        files.table(
            "artists",
            "artists.json",
            serde_json::to_string_pretty(&artists).expect("json"),
        );
        let tokens: Vec<serde_json::Value> = self
            .tokens
            .iter()
            .map(|t| {
                serde_json::json!({"artist_token_id": t.id, "artist_id": t.artist_id, "symbol": t.symbol})
            })
            .collect();
        files.table(
            "artist_tokens",
            "artist_tokens.json",
            serde_json::to_string_pretty(&tokens).expect("json"),
        );
        files
    }
}
