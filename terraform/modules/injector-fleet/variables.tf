variable "region_label" {
  description = "The AWS region code this fleet runs in (e.g. eu-west-2). It must match the region of the provider passed to the module; it names the resources and becomes the SpikeRegion tag."
  type        = string

  validation {
    condition     = can(regex("^[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-[0-9]{1,2}$", var.region_label))
    error_message = "region_label must be an AWS region code such as eu-west-2 or us-east-1."
  }
}

variable "run_id" {
  description = "The spike run id (lowercase letters, digits and hyphens, e.g. viral-x10-20260101-120000-a1b2c3). It names every resource and becomes the SpikeRunId tag."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9-]{0,62}[a-z0-9]$", var.run_id))
    error_message = "run_id must be 2 to 64 lowercase letters, digits or hyphens, starting and ending with a letter or digit (e.g. viral-x10-20260101-120000-a1b2c3)."
  }
}

variable "instance_count" {
  description = "How many injector instances to start in this region."
  type        = number

  validation {
    condition     = var.instance_count >= 1 && var.instance_count <= 100 && floor(var.instance_count) == var.instance_count
    error_message = "instance_count must be a whole number from 1 to 100; split larger fleets across regions or raise the per-injector rate."
  }
}

variable "instance_type" {
  description = "EC2 instance type of every injector (e.g. c6i.large; t3.micro for smoke tests)."
  type        = string
  default     = "c6i.large"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]*\\.[a-z0-9]+$", var.instance_type))
    error_message = "instance_type must look like family.size, e.g. c6i.large or t3.micro."
  }
}

variable "use_spot" {
  description = "Start the injectors as one-time spot instances (cheaper; AWS may reclaim them mid-run)."
  type        = bool
  default     = false
}

variable "ttl_minutes" {
  description = "Minutes after boot at which every injector powers itself off (and, with shutdown behaviour terminate, is deleted), even if spike never comes back to destroy it."
  type        = number

  validation {
    condition     = var.ttl_minutes >= 10 && var.ttl_minutes <= 1440 && floor(var.ttl_minutes) == var.ttl_minutes
    error_message = "ttl_minutes must be a whole number from 10 to 1440 (24 hours): the run's duration plus room for deploy and collect."
  }
}

variable "operator_cidr" {
  description = "The only network allowed to reach the injectors over SSH (port 22): the operator's public address as a CIDR, e.g. 203.0.113.7/32."
  type        = string

  validation {
    condition     = can(cidrhost(var.operator_cidr, 0))
    error_message = "operator_cidr must be a CIDR such as 203.0.113.7/32 (IPv4) or 2001:db8::7/128 (IPv6): give your own public address with a /32 or /128 suffix."
  }

  validation {
    # Any /0 is the whole internet, whatever address is written before the slash.
    condition     = !can(cidrhost(var.operator_cidr, 0)) || try(tonumber(split("/", var.operator_cidr)[1]) > 0, false)
    error_message = "operator_cidr must not open SSH to the whole internet (0.0.0.0/0 or ::/0): give your own public address, e.g. 203.0.113.7/32, or your office network's range."
  }
}

variable "ssh_public_key" {
  description = "The OpenSSH public key of this run's key pair (one line: type, base64 key, optional comment). The private key stays with spike and never enters Terraform."
  type        = string
  # Not a secret, but marked so that a private key pasted here by mistake is never echoed back.
  sensitive = true

  validation {
    condition     = can(regex("^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)) [A-Za-z0-9+/]+={0,3}( [^\\n]*)?$", trimspace(var.ssh_public_key)))
    error_message = "ssh_public_key must be one OpenSSH public key line (ssh-ed25519 AAAA... or ssh-rsa AAAA...), never a private key: pass the contents of the .pub file."
  }
}

variable "ami_ssm_parameter" {
  description = "Public SSM parameter that holds the AMI id of the injectors' image (Amazon Linux 2023 by default; any image with dnf or apt works). Not read when ami_id is given."
  type        = string
  default     = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64"

  validation {
    condition     = can(regex("^/[A-Za-z0-9_./-]+$", var.ami_ssm_parameter)) && length(var.ami_ssm_parameter) <= 2048
    error_message = "ami_ssm_parameter must be an SSM parameter path of letters, digits and _ . - /, starting with /, e.g. /aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64."
  }
}

variable "ami_id" {
  description = "A literal AMI id for the injectors (an image of your own, or one pinned for repeatable runs); null resolves ami_ssm_parameter instead. AMI ids are regional."
  type        = string
  default     = null

  validation {
    condition     = var.ami_id == null || can(regex("^ami-[0-9a-f]{8,17}$", var.ami_id))
    error_message = "ami_id must be null (use ami_ssm_parameter) or an AMI id such as ami-0123456789abcdef0."
  }
}

variable "ssh_user" {
  description = "The image's login user, the one the key pair logs in as (ec2-user on Amazon Linux, ubuntu on Ubuntu, admin on Debian). user_data gives it injector_workdir; an image without it falls back to those three."
  type        = string
  default     = "ec2-user"

  validation {
    condition     = can(regex("^[a-z_][a-z0-9_-]{0,31}$", var.ssh_user))
    error_message = "ssh_user must be a Linux user name (lowercase letters, digits, _ and -, at most 32), e.g. ec2-user, ubuntu or admin."
  }
}

variable "associate_public_ip" {
  description = "Give each injector a public IPv4 address (spike connects over SSH from the operator's machine). false keeps them private and needs subnet_id: the subnet must then be reachable from the operator (VPN, peering, a bastion) and reach the target and package repositories through a NAT gateway."
  type        = bool
  default     = true

  validation {
    # The provider sends the setting only with a subnet; a default subnet always maps public IPs.
    condition     = var.associate_public_ip || var.subnet_id != null
    error_message = "associate_public_ip = false needs subnet_id (and vpc_id): in the default VPC's subnets every instance gets a public address whatever this says."
  }
}

variable "target_ports" {
  description = "TCP ports of the target under test that the injectors may connect to (443 for https, 80 for http, or the base URL's explicit port)."
  type        = list(number)
  default     = [443]

  validation {
    condition     = length(var.target_ports) >= 1 && alltrue([for port in var.target_ports : port >= 1 && port <= 65535 && floor(port) == port])
    error_message = "target_ports must list at least one TCP port, each a whole number from 1 to 65535, e.g. [443]."
  }
}

variable "target_cidrs" {
  description = "Networks of the target under test (IPv4 or IPv6 CIDRs) that the injectors may reach on target_ports; 0.0.0.0/0 when the target's addresses are not fixed."
  type        = list(string)
  default     = ["0.0.0.0/0"]

  validation {
    condition     = length(var.target_cidrs) >= 1 && alltrue([for cidr in var.target_cidrs : can(cidrhost(cidr, 0))])
    error_message = "target_cidrs must list at least one CIDR, e.g. [\"198.51.100.0/24\"] or [\"0.0.0.0/0\"] for anywhere."
  }

  validation {
    # A security group holds 60 rules per direction; the bootstrap's rules need a few of them.
    condition     = length(distinct(var.target_ports)) * length(distinct(var.target_cidrs)) <= 50
    error_message = "target_ports x target_cidrs must make at most 50 security group rules: give fewer ports or merge the target's addresses into wider CIDRs."
  }
}

variable "root_volume_size_gb" {
  description = "Size of each injector's encrypted root volume in GiB (Gatling's simulation.log grows with the request count)."
  type        = number
  default     = 20

  validation {
    condition     = var.root_volume_size_gb >= 8 && var.root_volume_size_gb <= 500 && floor(var.root_volume_size_gb) == var.root_volume_size_gb
    error_message = "root_volume_size_gb must be a whole number from 8 to 500."
  }
}

variable "root_volume_type" {
  description = "EBS volume type of the root volume."
  type        = string
  default     = "gp3"

  validation {
    condition     = contains(["gp3", "gp2"], var.root_volume_type)
    error_message = "root_volume_type must be gp3 or gp2."
  }
}

variable "vpc_id" {
  description = "VPC for the security group; null uses the region's default VPC. Set it together with subnet_id."
  type        = string
  default     = null

  validation {
    condition     = var.vpc_id == null || can(regex("^vpc-[0-9a-f]{8,17}$", var.vpc_id))
    error_message = "vpc_id must be null (the default VPC) or a VPC id such as vpc-0123456789abcdef0."
  }
}

variable "subnet_id" {
  description = "Subnet of the injectors, in vpc_id; null uses a default subnet of the default VPC. Whether injectors get public addresses is associate_public_ip, not the subnet's default."
  type        = string
  default     = null

  validation {
    condition     = var.subnet_id == null || can(regex("^subnet-[0-9a-f]{8,17}$", var.subnet_id))
    error_message = "subnet_id must be null (a default subnet) or a subnet id such as subnet-0123456789abcdef0."
  }

  validation {
    # The security group is made in vpc_id and the instances in subnet_id: they must agree.
    condition     = (var.vpc_id == null) == (var.subnet_id == null)
    error_message = "vpc_id and subnet_id go together: give both (the subnet must be in the VPC) or neither (the region's default VPC)."
  }
}

variable "injector_workdir" {
  description = "Directory on each injector where spike puts the agent, the compiled simulation and the results."
  type        = string
  default     = "/opt/spike"

  validation {
    condition     = can(regex("^/[A-Za-z0-9._/-]+$", var.injector_workdir)) && var.injector_workdir != "/"
    error_message = "injector_workdir must be an absolute path of letters, digits, '.', '_', '-' and '/', e.g. /opt/spike (not / itself)."
  }
}

variable "tags" {
  description = "Tags on every resource; they must include spike's keys (ManagedBy=spike, SpikeRunId, SpikeOwner, SpikeExpiresAt, SpikeRegion) so that teardown and the reaper find everything."
  type        = map(string)

  validation {
    condition     = alltrue([for key in ["ManagedBy", "SpikeRunId", "SpikeOwner", "SpikeExpiresAt", "SpikeRegion"] : contains(keys(var.tags), key)])
    error_message = "tags must include ManagedBy, SpikeRunId, SpikeOwner, SpikeExpiresAt and SpikeRegion (loadorch.cloud.tags.run_tags builds them)."
  }

  validation {
    condition     = lookup(var.tags, "ManagedBy", "") == "spike"
    error_message = "tags.ManagedBy must be \"spike\": the reaper only looks for resources tagged ManagedBy=spike."
  }

  validation {
    condition     = lookup(var.tags, "SpikeRunId", "") == var.run_id && lookup(var.tags, "SpikeRegion", "") == var.region_label
    error_message = "tags.SpikeRunId must equal run_id and tags.SpikeRegion must equal region_label."
  }

  validation {
    condition     = can(regex("^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$", lookup(var.tags, "SpikeExpiresAt", "")))
    error_message = "tags.SpikeExpiresAt must be an RFC 3339 UTC time with whole seconds, e.g. 2026-11-26T14:05:00Z."
  }
}
