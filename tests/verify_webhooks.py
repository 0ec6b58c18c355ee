"""Verifies captured webhook deliveries with the Standard Webhooks reference implementation
(PyPI `standardwebhooks`), not with wasp's code. stdin: one JSON object per line,
{"secret", "headers": {name: value}, "body"}; prints the number verified; exits 1 on the first
delivery that does not verify."""
import json
import sys

from standardwebhooks.webhooks import Webhook

n = 0
for line in sys.stdin:
    if not line.strip():
        continue
    d = json.loads(line)
    try:
        Webhook(d["secret"]).verify(d["body"], d["headers"])
    except Exception as e:  # noqa: BLE001 - report any refusal
        print(f"delivery {n} did not verify: {e!r}", file=sys.stderr)
        sys.exit(1)
    n += 1
print(n)
