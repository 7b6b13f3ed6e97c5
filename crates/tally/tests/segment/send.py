"""Sends events to a running `tally serve` with Segment's own Python library.

Usage: send.py WRITE_KEY HOST
Exits non-zero if the library reports any error.
"""
import sys

import segment.analytics as analytics

errors = []


def on_error(error, items):
    errors.append(f"{error} ({len(items)} messages)")


analytics.write_key = sys.argv[1]
analytics.host = sys.argv[2]
analytics.gzip = True
analytics.max_retries = 2
analytics.on_error = on_error

for i in range(30):
    analytics.track(f"user{i % 7}", "Order Completed", {"revenue": i, "url": "https://shop.example/checkout"})
analytics.identify("user1", {"email": "one@example.com", "plan": "pro"})
analytics.page("user2", "Docs", "Pricing", {"url": "https://example.com/pricing"})
analytics.screen("user3", "App", "Home")
analytics.group("user1", "acme-inc", {"name": "Acme"})
analytics.alias("anon-42", "user4")
analytics.flush()
analytics.shutdown()

if errors:
    print("\n".join(errors), file=sys.stderr)
    sys.exit(1)
print("sent 35 messages")
