"""Evaluates Tollgate gates through OFREP with OpenFeature's own Python SDK and OFREP
provider, code nobody here wrote.

usage: ofrep_client.py BASE_URL TOKEN CHECKS_JSON

CHECKS_JSON is a list of {"flag", "type", "default", "context"}: type is boolean,
string, integer, float or object; context holds "targetingKey" and any attributes.
Prints one JSON line per check: {"flag", "value", "variant", "reason", "error_code",
"metadata"}, exactly as the SDK reports them. Exits non-zero only if the SDK itself
cannot be set up; evaluation errors are reported in error_code, as OpenFeature does.
"""
import json
import sys

from openfeature import api
from openfeature.contrib.provider.ofrep import OFREPProvider
from openfeature.evaluation_context import EvaluationContext


def main() -> int:
    base_url, token, checks = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    api.set_provider(OFREPProvider(base_url, headers_factory=lambda: {"Authorization": f"Bearer {token}"}))
    client = api.get_client()
    evaluate = {
        "boolean": client.get_boolean_details,
        "string": client.get_string_details,
        "integer": client.get_integer_details,
        "float": client.get_float_details,
        "object": client.get_object_details,
    }
    for check in checks:
        context = dict(check.get("context", {}))
        targeting_key = context.pop("targetingKey", None)
        details = evaluate[check["type"]](
            check["flag"], check["default"], EvaluationContext(targeting_key=targeting_key, attributes=context)
        )
        print(
            json.dumps(
                {
                    "flag": details.flag_key,
                    "value": details.value,
                    "variant": details.variant,
                    "reason": str(details.reason.value if hasattr(details.reason, "value") else details.reason),
                    "error_code": details.error_code.value if details.error_code else None,
                    "metadata": dict(details.flag_metadata or {}),
                }
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
