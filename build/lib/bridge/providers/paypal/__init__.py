"""PayPal: IPN messages (parsing, charsets, dates, verification body, mapping)."""
