"""The repositories whose SQL both backends speak (placeholders `?` and `:name`)."""
