"""Where `S3Store` sends its requests (what AWS and S3-compatible stores accept)."""

import pytest

from sentinel_sidecar.delivery.s3 import S3Store, partition_value


@pytest.mark.parametrize(
    ("uri", "region", "endpoint", "url"),
    [
        ("s3://runs/a", "eu-west-1", None, "https://runs.s3.eu-west-1.amazonaws.com/a/1.csv.gz"),
        ("s3://runs", None, None, "https://runs.s3.us-east-1.amazonaws.com/1.csv.gz"),
        ("s3://my.runs/a", "eu-west-1", None, "https://s3.eu-west-1.amazonaws.com/my.runs/a/1.csv.gz"),
        ("s3://runs/a", "cn-north-1", None, "https://runs.s3.cn-north-1.amazonaws.com.cn/a/1.csv.gz"),
        ("s3://runs/a", None, "http://127.0.0.1:9000/", "http://127.0.0.1:9000/runs/a/1.csv.gz"),
        ("s3://runs/job=x y", None, "http://minio", "http://minio/runs/job%3Dx%20y/1.csv.gz"),
    ],
)  # fmt: skip
def test_objects_are_addressed_virtual_hosted_on_aws_and_by_path_elsewhere(
    uri, region, endpoint, url
):
    store = S3Store(uri, region=region, endpoint_url=endpoint)
    assert store._url(store.key("1.csv.gz")) == url


def test_the_bucket_itself_is_addressed_without_a_key():
    assert S3Store("s3://runs/a", region=None, endpoint_url="http://minio")._url("") == (
        "http://minio/runs"
    )
    assert S3Store("s3://runs/a", region="eu-west-1", endpoint_url=None)._url("") == (
        "https://runs.s3.eu-west-1.amazonaws.com/"
    )


@pytest.mark.parametrize(
    ("value", "partition"),
    [("train", "train"), ("nightly-train.v2", "nightly-train.v2"), ("a b/c=d", "a%20b%2Fc%3Dd"),
     (None, "__HIVE_DEFAULT_PARTITION__"), ("", "__HIVE_DEFAULT_PARTITION__")],
)  # fmt: skip
def test_partition_values_are_escaped_as_hive_does(value, partition):
    assert partition_value(value) == partition
