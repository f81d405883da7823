# Two regions, one injector-fleet module each, bound to per-region provider aliases.
#
# This is the shape spike generates (as main.tf in the run's terraform/ directory) for
# `--provider aws`; run it by hand to try the module:
#
#   terraform init
#   terraform apply -var run_id=try-1 -var owner=me@example.com \
#     -var expires_at=2030-01-01T00:00:00Z -var operator_cidr=203.0.113.7/32 \
#     -var "ssh_public_key=$(cat ~/.ssh/id_ed25519.pub)"
#   terraform destroy   (same -var flags)
#
# Add -var endpoint=http://127.0.0.1:5000 to send every call to a moto server instead of AWS, and
# -var role_arn=arn:aws:iam::<account>:role/<name> to create the injectors in another account.
# Credentials come from the environment (AWS_PROFILE, AWS_ACCESS_KEY_ID, ...), never from here.

terraform {
  required_version = ">= 1.9.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.0, < 6.0"
    }
  }
}

variable "run_id" {
  description = "Run id: names every resource and becomes the SpikeRunId tag."
  type        = string
}

variable "owner" {
  description = "Who started the run (the SpikeOwner tag), e.g. an e-mail address."
  type        = string
}

variable "expires_at" {
  description = "When the reaper may delete whatever is left (SpikeExpiresAt), RFC 3339 UTC, e.g. 2030-01-01T00:00:00Z."
  type        = string
}

variable "operator_cidr" {
  description = "The only network allowed to SSH to the injectors, e.g. 203.0.113.7/32."
  type        = string
}

variable "ssh_public_key" {
  description = "OpenSSH public key of the run's key pair (the .pub file's contents)."
  type        = string
}

variable "instance_type" {
  description = "EC2 instance type of every injector."
  type        = string
  default     = "t3.micro"
}

variable "target_ports" {
  description = "TCP ports of the target under test that the injectors may connect to."
  type        = list(number)
  default     = [443]
}

variable "role_arn" {
  description = "An IAM role to assume in every region (the load-test account); null uses the credentials as they are."
  type        = string
  default     = null
}

variable "endpoint" {
  description = "An AWS API emulator (moto) that replaces every AWS endpoint; null means AWS itself."
  type        = string
  default     = null
}

locals {
  emulated = var.endpoint != null
  tags = {
    for region in ["eu-west-2", "us-east-1"] : region => {
      ManagedBy      = "spike"
      SpikeRunId     = var.run_id
      SpikeOwner     = var.owner
      SpikeExpiresAt = var.expires_at
      SpikeRegion    = region
    }
  }
}

provider "aws" {
  alias  = "eu-west-2"
  region = "eu-west-2"

  skip_credentials_validation = local.emulated
  skip_requesting_account_id  = local.emulated
  skip_metadata_api_check     = local.emulated
  skip_region_validation      = local.emulated

  dynamic "endpoints" {
    for_each = local.emulated ? [var.endpoint] : []
    content {
      ec2 = endpoints.value
      ssm = endpoints.value
      sts = endpoints.value
      iam = endpoints.value
    }
  }

  dynamic "assume_role" {
    for_each = var.role_arn == null ? [] : [var.role_arn]
    content {
      role_arn     = assume_role.value
      session_name = "spike-${var.run_id}"
    }
  }
}

provider "aws" {
  alias  = "us-east-1"
  region = "us-east-1"

  skip_credentials_validation = local.emulated
  skip_requesting_account_id  = local.emulated
  skip_metadata_api_check     = local.emulated
  skip_region_validation      = local.emulated

  dynamic "endpoints" {
    for_each = local.emulated ? [var.endpoint] : []
    content {
      ec2 = endpoints.value
      ssm = endpoints.value
      sts = endpoints.value
      iam = endpoints.value
    }
  }

  dynamic "assume_role" {
    for_each = var.role_arn == null ? [] : [var.role_arn]
    content {
      role_arn     = assume_role.value
      session_name = "spike-${var.run_id}"
    }
  }
}

module "fleet_eu_west_2" {
  source    = "../../modules/injector-fleet"
  providers = { aws = aws.eu-west-2 }

  region_label   = "eu-west-2"
  run_id         = var.run_id
  instance_count = 2
  instance_type  = var.instance_type
  ttl_minutes    = 120
  operator_cidr  = var.operator_cidr
  ssh_public_key = var.ssh_public_key
  target_ports   = var.target_ports
  tags           = local.tags["eu-west-2"]
}

module "fleet_us_east_1" {
  source    = "../../modules/injector-fleet"
  providers = { aws = aws.us-east-1 }

  region_label   = "us-east-1"
  run_id         = var.run_id
  instance_count = 1
  instance_type  = var.instance_type
  use_spot       = true # cheaper; AWS may reclaim a spot injector mid-run
  ttl_minutes    = 120
  operator_cidr  = var.operator_cidr
  ssh_public_key = var.ssh_public_key
  target_ports   = var.target_ports
  tags           = local.tags["us-east-1"]
}

output "fleets" {
  description = "Every region's injector-fleet outputs, by region code (the shape spike's inventory reads)."
  value = {
    "eu-west-2" = module.fleet_eu_west_2
    "us-east-1" = module.fleet_us_east_1
  }
}
