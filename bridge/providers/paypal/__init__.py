"""PayPal: IPN messages (parsing, charsets, dates, verification body, mapping) and REST webhook
events (parsing, verification request body, mapping)."""
