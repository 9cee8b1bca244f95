"""HTTP routes: parse, call a service, map the result. No image work happens here."""
