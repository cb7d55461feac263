"""A local DynamoDB for the end-to-end tests: moto's server (PyPI `moto[server]`) on
127.0.0.1, with the table the service's runtime config names already created.

    python3 tests/e2e/dynamodb_emulator.py --port 0 --region eu-west-1 --table stock

Prints one line, `listening on http://127.0.0.1:PORT`, once the table exists, then
serves until killed.

moto answers each HTTP request on its own thread, and its TransactWriteItems is not
atomic across threads: it checks the condition and writes in two steps, and a
transaction that fails restores a deep copy of the *whole table* taken when it began,
erasing every write that landed meanwhile. Real DynamoDB does neither. So requests are
served one at a time here (connections are still accepted concurrently): the emulator
then behaves as the service's store contract requires, and a failure in these tests
is the service's, not the emulator's.

That copy of the whole table also makes every transaction cost as much as the table is
large. Spin's store sends one item per transaction, and a one-item transaction that
fails has written nothing, so here the "copy" is the table itself (rolling back to it
changes nothing) and a transaction costs what its item does.
"""

import argparse
import sys
import threading

import copy

import boto3
import moto.dynamodb.models as dynamodb_models
from moto.dynamodb.models.table import Table
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import make_server


class KeepTables:
    """Stands in for the `copy` module in moto's DynamoDB backend: tables are not copied."""

    @staticmethod
    def deepcopy(value, memo=None):
        return value if isinstance(value, Table) else copy.deepcopy(value, memo)

class OneAtATime:
    """Serves one WSGI request at a time, body included."""

    def __init__(self, app):
        self.app = app
        self.lock = threading.Lock()

    def __call__(self, environ, start_response):
        with self.lock:
            return list(self.app(environ, start_response))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--region", default="eu-west-1")
    parser.add_argument("--table", default="stock")
    parser.add_argument(
        "--threaded-unsafe",
        action="store_true",
        help="serve requests concurrently, as `moto_server` does (loses writes)",
    )
    args = parser.parse_args()

    app = DomainDispatcherApplication(create_backend_app)
    if not args.threaded_unsafe:
        app = OneAtATime(app)
        dynamodb_models.copy = KeepTables
    server = make_server("127.0.0.1", args.port, app, threaded=True)
    url = f"http://127.0.0.1:{server.port}"
    threading.Thread(target=server.serve_forever, daemon=True).start()

    boto3.client(
        "dynamodb",
        endpoint_url=url,
        region_name=args.region,
        aws_access_key_id="emulator",
        aws_secret_access_key="emulator",
    ).create_table(
        TableName=args.table,
        AttributeDefinitions=[{"AttributeName": "PK", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "PK", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
    )
    print(f"listening on {url}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
