"""The admin API: one route table (`routes.py`) of typed endpoints over the operations
layer (`ingest/operations/`), its runtime (`endpoint.py`: authentication, validation, JSON
errors), and the OpenAPI document generated from the tables (`openapi.py`, `/docs`)."""
