-- Seed 001 (AudiFi): the analytics of a music-NFT platform, in Tally.
--
-- The seed keeps cached aggregate columns updated by triggers (`artist_tokens.holders_count`,
-- `artists.total_sales`, …) and plans materialized views refreshed daily
-- (`mv_artist_performance`). Here the platform's indexer sends what happens as events (five
-- streams); live views keep every per-artist and per-holder total correct on each event; the
-- names and the token list are reference tables; saved queries join them at query time.
--
--   tally apply examples/audifi/schema.sql
--   tally query token_holders
--   tally query token_holder_balances --param artist_token_id=tk-01
--   tally query artist_performance

-- ── Streams ────────────────────────────────────────────────────────────────────────────────

-- ERC-20 `Transfer` logs of the artist tokens (the seed's "On transfer events" trigger input).
-- A mint comes from the zero address, a burn goes to it. One log per row: `transfer_id` is
-- the transaction hash and log index, so a re-sent log counts once.
CREATE STREAM token_transfers (
  transfer_id     TEXT NOT NULL,
  artist_token_id TEXT NOT NULL,
  from_wallet     TEXT NOT NULL,
  to_wallet       TEXT NOT NULL,
  amount          DECIMAL(36,18) NOT NULL,
  tx_hash         TEXT NOT NULL,
  block_timestamp TIMESTAMP NOT NULL
) WITH (event_time = 'block_timestamp', dedupe_key = 'transfer_id');

-- What the seed reads from `masters`, `master_ipos` and their `minted_supply`: a master is
-- created, its IPO launched, NFTs of it minted (`quantity`).
CREATE STREAM master_events (
  event_id    TEXT NOT NULL,
  event_type  TEXT NOT NULL,          -- master_created / ipo_launched / nft_minted
  artist_id   TEXT NOT NULL,
  master_id   TEXT NOT NULL,
  ipo_id      TEXT,
  quantity    BIGINT,
  occurred_at TIMESTAMP NOT NULL
) WITH (event_time = 'occurred_at', dedupe_key = 'event_id');

-- The seed's `revenue_events`; only `distributed` revenue counts as revenue.
CREATE STREAM revenue_events (
  revenue_event_id TEXT NOT NULL,
  artist_id        TEXT NOT NULL,
  master_id        TEXT NOT NULL,
  amount_usd       DECIMAL(18,2) NOT NULL,
  status           TEXT NOT NULL,     -- pending / distributed
  occurred_at      TIMESTAMP NOT NULL
) WITH (event_time = 'occurred_at', dedupe_key = 'revenue_event_id');

-- The seed's `dividend_events`; `distribution` events are what artists paid out.
CREATE STREAM dividend_events (
  dividend_event_id TEXT NOT NULL,
  artist_id         TEXT NOT NULL,
  master_id         TEXT NOT NULL,
  event_type        TEXT NOT NULL,    -- distribution / claim
  total_amount      DECIMAL(18,2) NOT NULL,
  occurred_at       TIMESTAMP NOT NULL
) WITH (event_time = 'occurred_at', dedupe_key = 'dividend_event_id');

-- V Studio votes (the seed's `vstudio_votes`, with the session's artist on each vote).
CREATE STREAM vstudio_votes (
  vote_id            TEXT NOT NULL,
  vstudio_session_id TEXT NOT NULL,
  artist_id          TEXT NOT NULL,
  voter_wallet       TEXT NOT NULL,
  voted_at           TIMESTAMP NOT NULL
) WITH (event_time = 'voted_at', dedupe_key = 'vote_id');

-- ── Reference data ────────────────────────────────────────────────────────────────────────

CREATE TABLE artists (
  artist_id   TEXT PRIMARY KEY,
  artist_name TEXT NOT NULL,
  genre       TEXT
);

CREATE TABLE artist_tokens (
  artist_token_id TEXT PRIMARY KEY,
  artist_id       TEXT NOT NULL,
  symbol          TEXT NOT NULL
);

-- ── Live views ────────────────────────────────────────────────────────────────────────────

-- A transfer changes two balances, and a view groups each event once: tokens received and
-- tokens sent per wallet are two views, and a balance is their difference at query time.
CREATE MATERIALIZED VIEW token_received AS
SELECT artist_token_id, to_wallet AS wallet, sum(amount) AS received, count(*) AS transfers_in
FROM token_transfers
GROUP BY artist_token_id, to_wallet;

CREATE MATERIALIZED VIEW token_sent AS
SELECT artist_token_id, from_wallet AS wallet, sum(amount) AS sent, count(*) AS transfers_out
FROM token_transfers
GROUP BY artist_token_id, from_wallet;

-- Per artist, one view per source stream. The seed's mv_artist_performance LEFT JOINs all five
-- sources in one statement, so every sum is multiplied by the rows of the other joins (an
-- artist with 3 revenue events and 2 sessions counts each revenue twice); one view per stream
-- joined on artist_id afterwards cannot fan out.
CREATE MATERIALIZED VIEW artist_catalog AS
SELECT artist_id,
       count(DISTINCT master_id) FILTER (WHERE event_type = 'master_created') AS total_masters,
       count(DISTINCT ipo_id) FILTER (WHERE event_type = 'ipo_launched')      AS total_ipos,
       sum(quantity) FILTER (WHERE event_type = 'nft_minted')                 AS total_nfts_minted,
       min(occurred_at) FILTER (WHERE event_type = 'master_created')          AS first_master_created_at,
       max(occurred_at) FILTER (WHERE event_type = 'master_created')          AS last_master_created_at
FROM master_events
GROUP BY artist_id;

CREATE MATERIALIZED VIEW artist_revenue AS
SELECT artist_id,
       sum(amount_usd) FILTER (WHERE status = 'distributed') AS revenue_usd,
       count(*)                                               AS revenue_events
FROM revenue_events
GROUP BY artist_id;

CREATE MATERIALIZED VIEW artist_dividends AS
SELECT artist_id,
       sum(total_amount) FILTER (WHERE event_type = 'distribution') AS dividends_distributed
FROM dividend_events
GROUP BY artist_id;

CREATE MATERIALIZED VIEW artist_vstudio AS
SELECT artist_id,
       count(DISTINCT vstudio_session_id) AS sessions,
       count(*)                           AS votes
FROM vstudio_votes
GROUP BY artist_id;

-- ── Saved queries ─────────────────────────────────────────────────────────────────────────

-- artist_tokens.holders_count: the wallets holding a positive balance of each token (the zero
-- address, where mints come from and burns go, is no holder), with the circulating supply and
-- the largest holding. A token nobody holds yet has 0 holders.
CREATE VIEW token_holders AS
WITH balances AS (
  SELECT coalesce(r.artist_token_id, s.artist_token_id) AS artist_token_id,
         coalesce(r.wallet, s.wallet)                   AS wallet,
         coalesce(r.received, 0) - coalesce(s.sent, 0)  AS balance
  FROM token_received r
  FULL JOIN token_sent s ON s.artist_token_id = r.artist_token_id AND s.wallet = r.wallet
)
SELECT t.artist_token_id,
       t.symbol,
       a.artist_name,
       count(b.wallet)              AS holders_count,
       coalesce(sum(b.balance), 0)  AS circulating_supply,
       max(b.balance)               AS largest_balance
FROM artist_tokens t
JOIN artists a ON a.artist_id = t.artist_id
LEFT JOIN balances b
  ON b.artist_token_id = t.artist_token_id
 AND b.wallet <> '0x0000000000000000000000000000000000000000'
 AND b.balance > 0
GROUP BY t.artist_token_id, t.symbol, a.artist_name
ORDER BY holders_count DESC, t.artist_token_id;

-- The holders of one token, largest first (the seed's portfolio and holder-count trigger
-- input), with each holder's rank.
CREATE VIEW token_holder_balances AS
WITH balances AS (
  SELECT coalesce(r.wallet, s.wallet)                  AS wallet,
         coalesce(r.received, 0) - coalesce(s.sent, 0) AS balance
  FROM (SELECT * FROM token_received WHERE artist_token_id = :artist_token_id) r
  FULL JOIN (SELECT * FROM token_sent WHERE artist_token_id = :artist_token_id) s
    ON s.wallet = r.wallet
)
SELECT wallet,
       balance,
       rank() OVER (ORDER BY balance DESC) AS rank
FROM balances
WHERE balance > 0 AND wallet <> '0x0000000000000000000000000000000000000000'
ORDER BY rank, wallet;

-- mv_artist_performance: every artist of the `artists` table with their totals and name. As in
-- the seed, the counts and the coalesced sums are 0 for an artist with nothing yet, while
-- total_nfts_minted and total_vstudio_votes (plain SUMs there) stay NULL.
CREATE VIEW artist_performance AS
SELECT a.artist_id,
       a.artist_name,
       coalesce(c.total_masters, 0)          AS total_masters,
       coalesce(c.total_ipos, 0)             AS total_ipos,
       c.total_nfts_minted,
       coalesce(r.revenue_usd, 0)            AS total_revenue_usd,
       coalesce(d.dividends_distributed, 0)  AS total_dividends_distributed,
       coalesce(v.sessions, 0)               AS total_vstudio_sessions,
       v.votes                               AS total_vstudio_votes,
       c.first_master_created_at,
       c.last_master_created_at
FROM artists a
LEFT JOIN artist_catalog c   ON c.artist_id = a.artist_id
LEFT JOIN artist_revenue r   ON r.artist_id = a.artist_id
LEFT JOIN artist_dividends d ON d.artist_id = a.artist_id
LEFT JOIN artist_vstudio v   ON v.artist_id = a.artist_id
ORDER BY a.artist_id;
