"""The shapes AWS accepts for the names spike passes on: role ARNs, role session names, external ids.

One definition, read by the CLI's account (`cloud/aws.py`) and by the Terraform configuration
(`providers/terraform/config.py`), so that both refuse exactly the same values.
"""

from __future__ import annotations

import re

# arn:aws:iam::<12-digit account>:role/<optional/path/>name (other partitions: aws-cn, aws-us-gov)
ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/([\w+=,.@-]+/)*[\w+=,.@-]{1,64}$")
SESSION_NAME = re.compile(r"^[\w+=,.@-]{2,64}$")
EXTERNAL_ID = re.compile(r"^[\w+=,.@:/-]{2,1224}$")
