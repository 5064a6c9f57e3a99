"""The test servers themselves: the S3 server must not run out of room as the suite adds buckets."""

from services import SeaweedS3


class _SmallSeaweedS3(SeaweedS3):
    MAX_VOLUMES = 12


def test_every_bucket_takes_one_volume_so_the_suite_cannot_exhaust_the_s3_server(tmp_path):
    """A bucket is a SeaweedFS collection; by default each grows 7 volumes at its first write,
    which ran the server out of volumes in CI (the count came from the free disk). With 12
    volumes, ten buckets and the readiness probe's fit only at one volume each."""
    import boto3

    s3 = _SmallSeaweedS3(tmp_path / "s3")
    try:
        client = boto3.client("s3", endpoint_url=s3.env["AWS_ENDPOINT_URL"], region_name="us-east-1",
                              aws_access_key_id="x", aws_secret_access_key="y")
        for i in range(10):
            client.create_bucket(Bucket=f"bucket-{i}")
            client.put_object(Bucket=f"bucket-{i}", Key="blob", Body=b"adapter bytes")
        assert [client.get_object(Bucket=f"bucket-{i}", Key="blob")["Body"].read() for i in range(10)] == [b"adapter bytes"] * 10
    finally:
        s3.stop()
