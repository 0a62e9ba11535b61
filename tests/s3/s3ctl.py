"""Drives the tests' local S3 server (moto in server mode) with boto3.

  s3ctl.py setup ENDPOINT BUCKET
      Creates an IAM user allowed everything, its access key and BUCKET; prints
      "KEY_ID SECRET". The server must run with INITIAL_NO_AUTH_ACTION_COUNT=3:
      these three IAM calls are the unauthenticated ones, every later request
      must be signed with a valid key (so a wrong secret is refused).
  s3ctl.py upload ENDPOINT KEY_ID SECRET BUCKET PREFIX DIR
      Uploads every file under DIR to s3://BUCKET/PREFIX/<relative path>.
  s3ctl.py bucket ENDPOINT KEY_ID SECRET BUCKET
      Creates another bucket.
"""
import json
import os
import sys

import boto3
from botocore.config import Config

ALLOW_ALL = json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]})


def client(service, endpoint, key="setup", secret="setup"):
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=key, aws_secret_access_key=secret,
        # No streamed (aws-chunked) checksums: moto's signature check refuses them.
        config=Config(request_checksum_calculation="when_required"),
    )


def main(cmd, *args):
    if cmd == "setup":
        endpoint, bucket = args
        iam = client("iam", endpoint)
        iam.create_user(UserName="daeda")
        iam.put_user_policy(UserName="daeda", PolicyName="all", PolicyDocument=ALLOW_ALL)
        k = iam.create_access_key(UserName="daeda")["AccessKey"]
        client("s3", endpoint, k["AccessKeyId"], k["SecretAccessKey"]).create_bucket(Bucket=bucket)
        print(k["AccessKeyId"], k["SecretAccessKey"])
    elif cmd == "upload":
        endpoint, key, secret, bucket, prefix, root = args
        s3 = client("s3", endpoint, key, secret)
        for d, _, files in os.walk(root):
            for f in files:
                path = os.path.join(d, f)
                with open(path, "rb") as body:
                    s3.put_object(Bucket=bucket, Key=prefix + "/" + os.path.relpath(path, root), Body=body.read())
    elif cmd == "bucket":
        endpoint, key, secret, bucket = args
        client("s3", endpoint, key, secret).create_bucket(Bucket=bucket)
    else:
        sys.exit("usage: s3ctl.py setup|upload|bucket ...")


if __name__ == "__main__":
    main(*sys.argv[1:])
