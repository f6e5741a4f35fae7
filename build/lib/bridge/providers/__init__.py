"""Provider-specific verification and mapping: one package per provider."""
