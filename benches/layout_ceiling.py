#!/usr/bin/env python3
"""What the ledger's table layout allows on SQLite, without the service.

Writes the rows a batch of events writes (record, ledger line, retry key,
audit entry, tree node, points line, daily usage, monthly totals) into a
fresh copy of a real ledger's schema, one transaction per batch, with the
service's settings (WAL, synchronous = FULL, secure_delete, a 4 MiB page
cache, a passive checkpoint every 2 s), and prints events/s with the first
and last tenth. Dropping indexes or whole tables from the copy shows what
each costs (docs/performance.md, sixth round).

    carbon-ledger --data-dir DIR tenant add --name t --role platform
    python3 benches/layout_ceiling.py DIR/ledger.db [VARIANT] [BATCHES] [PEOPLE]

VARIANT is `all`, or `+`-joined names of indexes to leave out and of these
switches: `no_retry_keys`, `no_ledger_lines`, `no_points_lines`,
`no_daily_usage`, and `fold` (a unique index on the record for its retry
key, as if the retry key were a column of the record's row). The
environment's TXN sets events per transaction (1000).
"""

import os
import shutil
import sqlite3
import sys
import tempfile
import time

ledger = sys.argv[1]
variant = sys.argv[2] if len(sys.argv) > 2 else "all"
batches = int(sys.argv[3]) if len(sys.argv) > 3 else 100
people = int(sys.argv[4]) if len(sys.argv) > 4 else 500
per_txn = int(os.environ.get("TXN", "1000"))
left_out = set() if variant == "all" else set(variant.split("+"))

schema = [
    r[0]
    for r in sqlite3.connect(ledger).execute(
        "SELECT sql FROM sqlite_master WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite_%' ORDER BY rowid"
    )
]
work = tempfile.mkdtemp()
c = sqlite3.connect(os.path.join(work, "ledger.db"), isolation_level=None)
for pragma in ["journal_mode = WAL", "synchronous = FULL", "secure_delete = ON", "cache_size = -4096",
               "wal_autocheckpoint = 0"]:
    c.execute("PRAGMA " + pragma)
for statement in schema:
    words = statement.split()
    if words[:2] == ["CREATE", "INDEX"] and words[2] in left_out:
        continue
    if words[:3] == ["CREATE", "UNIQUE", "INDEX"] and words[3] in left_out:
        continue
    c.execute(statement)
if "fold" in left_out:
    c.execute("CREATE UNIQUE INDEX records_by_retry_key ON records (tenant_id, record_id)")
c.execute("INSERT INTO tenants VALUES (1, 't', 'platform', x'00', 0)")
c.execute("ATTACH ? AS source", (ledger,))
c.execute("INSERT INTO key_versions SELECT * FROM source.key_versions")
c.execute("DETACH source")

subjects = [os.urandom(32) for _ in range(people)]
audit_refs = [os.urandom(32) for _ in range(people)]
seq, n, day = 10, 0, 20000
times, last_checkpoint, start = [], time.time(), time.time()
for _ in range(batches):
    began = time.time()
    c.execute("BEGIN IMMEDIATE")
    records, lines, keys, entries, nodes, points, usage = [], [], [], [], [], [], {}
    for _ in range(per_txn):
        s = n % people
        n += 1
        seq += 1
        record_id = os.urandom(16)
        kind = ["transit_ride", "walking", "cycling"][n % 3]
        records.append((seq, record_id, 1, subjects[s], kind, day, 1, os.urandom(120), 0))
        lines.append((1, subjects[s], record_id, seq, kind, "bus", day, 1, 80000, 10, "v1", 0, 0))
        keys.append((1, os.urandom(32), os.urandom(32), subjects[s], record_id, 80000, 10, "v1", 0, seq, 0))
        entries.append((seq, os.urandom(200), os.urandom(32), os.urandom(32), 0, 1, audit_refs[s]))
        if seq % 2 == 0:
            nodes.append((1, seq // 2, os.urandom(32)))
        points.append((1, subjects[s], "earn", 10, 100, day, day + 365, record_id, None, seq, 0))
        usage[(s, kind)] = usage.get((s, kind), 0) + 1
    c.executemany("INSERT INTO records (seq, record_id, tenant_id, subject, kind, day, key_version, sealed, "
                  "created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", records)
    if "no_ledger_lines" not in left_out:
        c.executemany("INSERT INTO ledger_entries (tenant_id, subject, record_id, record_seq, kind, variant, day, "
                      "month, reduction_mg, points, methodology_version, capped, created_at) "
                      "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", lines)
    if "no_retry_keys" not in left_out and "fold" not in left_out:
        c.executemany("INSERT INTO idempotency_keys (tenant_id, event_key, content_hash, subject, record_id, "
                      "reduction_mg, points, methodology_version, capped, audit_seq, created_at) "
                      "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", keys)
    c.executemany("INSERT INTO audit_log (seq, entry, leaf_hash, chain_hash, at, tenant_id, subject_ref) "
                  "VALUES (?, ?, ?, ?, ?, ?, ?)", entries)
    c.executemany("INSERT INTO audit_nodes (level, idx, hash) VALUES (?, ?, ?)", nodes)
    if "no_points_lines" not in left_out:
        c.executemany("INSERT INTO points_entries (tenant_id, subject, entry, points, balance, day, expires_on, "
                      "record_id, redemption_id, audit_seq, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                      points)
    if "no_daily_usage" not in left_out:
        c.executemany("INSERT INTO daily_usage (tenant_id, subject, day, kind, variant, credited, reduction_mg) "
                      "VALUES (1, ?, ?, ?, 'x', ?, 0) ON CONFLICT (tenant_id, subject, day, kind, variant) "
                      "DO UPDATE SET credited = daily_usage.credited + excluded.credited",
                      [(subjects[s], day, kind, k) for (s, kind), k in usage.items()])
    c.execute("COMMIT")
    if time.time() - last_checkpoint > 2:
        c.execute("PRAGMA wal_checkpoint(PASSIVE)")
        last_checkpoint = time.time()
    times.append(time.time() - began)
elapsed = time.time() - start
tenth = max(len(times) // 10, 1)
print(f"{variant:40s} {batches * per_txn / elapsed:8.0f} events/s  first tenth "
      f"{tenth * per_txn / sum(times[:tenth]):8.0f}  last tenth {tenth * per_txn / sum(times[-tenth:]):8.0f}")
c.close()
shutil.rmtree(work)
