"""moto's S3-compatible server on 127.0.0.1 for the object-store tests, with a bucket `bkt`.

The AWS_* variables (fake credentials, AWS_ENDPOINT_URL) are set while it runs, so pyarrow's
S3 filesystem, here and in every process started meanwhile (Ray's workers), finds it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import pyarrow.fs as pafs

S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}
BUCKET = "bkt"


@contextlib.contextmanager
def s3_server() -> Iterator[pafs.S3FileSystem]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    saved = {k: os.environ.get(k) for k in [*S3_ENV, "AWS_ENDPOINT_URL"]}
    os.environ.update(S3_ENV, AWS_ENDPOINT_URL=f"http://{host}:{port}")
    try:
        fs = pafs.S3FileSystem(
            endpoint_override=f"{host}:{port}", scheme="http", allow_bucket_creation=True
        )
        fs.create_dir(BUCKET)
        yield fs
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
