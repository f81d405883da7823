terraform {
  # 1.9+ for validation blocks that name other variables (operator_cidr, tags).
  required_version = ">= 1.9.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.0, < 6.0"
    }
  }
}
