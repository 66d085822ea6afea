"""SQL, one module per table (or tight group of tables); the rest of the code calls these.

Importing the package makes psycopg read and write JSON with orjson (a worker profile
showed stdlib `json.loads` of jsonb columns at ~7% of a batch's time).
"""

import orjson
from psycopg.types.json import set_json_dumps, set_json_loads

set_json_loads(orjson.loads)
set_json_dumps(lambda value: orjson.dumps(value).decode())
