"""Every default value in one place, each with the reason it is what it is."""

# Prefix of every Redis key mailpipe writes; lets one Redis host several unrelated deployments.
DEFAULT_NAMESPACE = "mailpipe"
# Name of the pipeline (the stream and everything that belongs to it share this hash tag).
DEFAULT_STREAM = "mail"
# Consumer group the workers join; a second application reading the same mail uses another group.
DEFAULT_GROUP = "workers"
# Where a newly created group starts: "0" delivers everything already in the stream (nothing lost).
DEFAULT_GROUP_START_ID = "0"
# Handler used when none is configured: one structured log line per email.
DEFAULT_HANDLER = "mailpipe.handlers:log_email"
# Handlers running at once in one worker process.
DEFAULT_CONCURRENCY = 16
# Entries fetched per XREADGROUP call; also the size of one settle batch.
DEFAULT_BATCH_SIZE = 100
# Entries one worker holds at once (claimed, running or waiting for a handler slot); 0 = automatic:
# max(concurrency, batch size), so even one handler at a time is fed whole batches. Slow handlers on a
# fleet: set it to the concurrency so entries are not held by one busy worker while others idle.
DEFAULT_PREFETCH = 0
# How long one XREADGROUP blocks waiting for new entries.
DEFAULT_BLOCK_MS = 2_000
# How long in-flight handlers may run after the first SIGTERM/SIGINT before the worker exits anyway.
DEFAULT_SHUTDOWN_TIMEOUT_S = 30.0
# Lifetime of the per-key claim that keeps two workers from running one email at once; renewed by the
# heartbeat while the handler runs, so it only bounds how long a dead worker's claim blocks others.
DEFAULT_CLAIM_TTL_MS = 30_000
# How long a processed idempotency key is remembered (duplicates inside this window are skipped).
DEFAULT_DEDUP_RETENTION_S = 7 * 24 * 3600
# Width of one dedup bucket set; a key is remembered for retention .. retention + one bucket.
DEFAULT_DEDUP_BUCKET_S = 24 * 3600
# Exponential backoff with full jitter: delay = random(0, min(cap, base * factor ** attempt)).
DEFAULT_RETRY_BASE_S = 1.0
DEFAULT_RETRY_FACTOR = 2.0
DEFAULT_RETRY_CAP_S = 300.0
# Attempts (first run included) before an entry is dead-lettered.
DEFAULT_MAX_ATTEMPTS = 5
# An entry pending this long on a consumer that stopped heart-beating is reclaimed by another worker.
DEFAULT_RECLAIM_IDLE_MS = 60_000
# An entry delivered this many times without settling (it keeps killing workers) is dead-lettered.
DEFAULT_MAX_DELIVERIES = 10
# Consumers idle this long with no pending entries are removed from the group.
DEFAULT_CONSUMER_PRUNE_IDLE_MS = 24 * 3600 * 1000
# Circuit breaker: consecutive downstream failures that open it, and how long it stays open.
DEFAULT_BREAKER_THRESHOLD = 5
DEFAULT_BREAKER_COOLDOWN_S = 30.0
# Approximate stream length to trim to (never past an undelivered or pending entry); 0 disables trimming.
DEFAULT_STREAM_MAX_LEN = 100_000
# Dead letters are kept until purged; a retention (seconds) is opt-in.
DEFAULT_DEAD_LETTER_RETENTION_S = 0
# How often the worker runs housekeeping (heartbeat, due retries, reclaim, trim).
DEFAULT_HOUSEKEEPING_INTERVAL_S = 1.0

# Size policy of the stream entry (see docs/ARCHITECTURE.md#size-policy).
# Raw RFC 822 bytes are carried in the entry only up to this size; larger mail carries a reference.
DEFAULT_RAW_INLINE_MAX_BYTES = 64 * 1024
# The text and the HTML body are each cut at this many characters (flagged as truncated).
DEFAULT_BODY_MAX_CHARS = 256 * 1024
# At most this many headers are kept in the entry (mail with thousands of headers exists).
DEFAULT_MAX_HEADERS = 200

# Port of the embedded Redis started when no MAILPIPE_REDIS_URL is configured.
DEFAULT_EMBEDDED_PORT = 6390
# Where the embedded Redis keeps its data (relative to the working directory).
DEFAULT_EMBEDDED_DIR = ".mailpipe/redis"

# --- producer (IMAP and local mailbox import) ---------------------------------------------------
# Socket timeout of one IMAP command; a silently dead connection is noticed after this long.
DEFAULT_IMAP_TIMEOUT_S = 60.0
# Polling period when the server has no IDLE (or IDLE is disabled).
DEFAULT_POLL_INTERVAL_S = 60.0
# IDLE is re-issued this often; RFC 2177 servers may drop an idler after 29 minutes.
DEFAULT_IDLE_REFRESH_S = 600.0
# UIDs covered by one metadata FETCH; grows over sparse UID ranges, so no response is ever huge.
DEFAULT_UID_WINDOW = 500
# Bodies fetched per FETCH, bounded by count and by announced size (a batch holds at least one message).
DEFAULT_FETCH_BATCH_MESSAGES = 50
DEFAULT_FETCH_BATCH_BYTES = 16 * 1024 * 1024
# Larger messages are fetched as headers only and published as metadata + reference (never dropped).
DEFAULT_MAX_FETCH_BYTES = 64 * 1024 * 1024
# After a UIDVALIDITY change, mail whose INTERNALDATE is within this margin of the last sync is re-checked.
DEFAULT_RESYNC_MARGIN_S = 2 * 24 * 3600
# Cap of the exponential reconnect backoff.
DEFAULT_RECONNECT_MAX_S = 300.0
# Lifetime of the one-producer-per-mailbox lease; renewed every third, so a killed producer frees it soon.
DEFAULT_LEASE_TTL_S = 30.0
# Publishing pauses while some consumer group has more undelivered entries than this (0 disables).
DEFAULT_BACKPRESSURE_LIMIT = 10_000
# How often a paused producer looks again.
DEFAULT_BACKPRESSURE_CHECK_S = 2.0
# How long the producer remembers what it published, so a re-sync or a re-run import publishes nothing twice.
DEFAULT_PUBLISHED_RETENTION_S = 30 * 24 * 3600
DEFAULT_PUBLISHED_BUCKET_S = 24 * 3600
