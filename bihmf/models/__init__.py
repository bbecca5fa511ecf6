"""Structure encoders, fusion strategies and the assembled protein model."""
