"""Data: SQLModel tables, the engine, SQL per domain, seeding and CSV import."""
