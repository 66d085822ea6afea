"""SQL, one module per table (or tight group of tables); the rest of the code calls these."""
