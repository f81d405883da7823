# One region's injector fleet for one spike run: a key pair, a security group and N instances.
# Every resource carries spike's tags so that teardown and `spike reap` find it even without state.

data "aws_region" "current" {}

# The image's id, unless a literal ami_id is given.
data "aws_ssm_parameter" "ami" {
  count = var.ami_id == null ? 1 : 0
  name  = var.ami_ssm_parameter
}

locals {
  name             = "spike-${var.run_id}-${var.region_label}"
  operator_is_ipv6 = strcontains(var.operator_cidr, ":")
  # Public SSM parameters are plain strings; insecure_value keeps the AMI id out of sensitive-value plumbing.
  ami_id = var.ami_id != null ? var.ami_id : data.aws_ssm_parameter.ami[0].insecure_value

  user_data = templatefile("${path.module}/user_data.sh.tftpl", {
    run_id           = var.run_id
    region_label     = var.region_label
    ttl_minutes      = var.ttl_minutes
    injector_workdir = var.injector_workdir
    ssh_user         = var.ssh_user
  })

  # Egress, narrowed (README: "Egress"). The bootstrap installs packages over HTTPS and HTTP from
  # anywhere (distribution mirrors and CDNs have no fixed addresses); the load goes to the target's
  # ports on target_cidrs. One rule per port, so a target on 443 or 80 shares the bootstrap's rule
  # instead of duplicating it (EC2 refuses duplicate rules).
  bootstrap_ports   = [443, 80]
  target_cidrs_ipv4 = [for cidr in var.target_cidrs : cidr if !strcontains(cidr, ":")]
  target_cidrs_ipv6 = [for cidr in var.target_cidrs : cidr if strcontains(cidr, ":")]
  egress_tcp = [
    for port in distinct(concat(var.target_ports, local.bootstrap_ports)) : {
      port = port
      ipv4 = distinct(concat(
        contains(local.bootstrap_ports, port) ? ["0.0.0.0/0"] : [],
        contains(var.target_ports, port) ? local.target_cidrs_ipv4 : [],
      ))
      ipv6 = distinct(concat(
        contains(local.bootstrap_ports, port) ? ["::/0"] : [],
        contains(var.target_ports, port) ? local.target_cidrs_ipv6 : [],
      ))
      description = (
        !contains(var.target_ports, port) ? "Package repositories for the bootstrap (Java, chrony) on TCP ${port}" :
        contains(local.bootstrap_ports, port) ? "The target under test, and package repositories for the bootstrap, on TCP ${port}" :
        "The target under test on TCP ${port}"
      )
    }
  ]
}

resource "aws_key_pair" "injector" {
  # Only the public half is here; the private key never leaves spike's run directory.
  key_name   = local.name
  public_key = trimspace(var.ssh_public_key)
  tags       = merge(var.tags, { Name = local.name })

  lifecycle {
    precondition {
      condition     = data.aws_region.current.name == var.region_label
      error_message = "region_label (${var.region_label}) differs from the region of the provider given to this module (${data.aws_region.current.name}): pass providers = { aws = aws.${var.region_label} }."
    }
  }
}

resource "aws_security_group" "injector" {
  name        = local.name
  description = "spike injectors of run ${var.run_id}: SSH from the operator only, egress to the target and the bootstrap"
  vpc_id      = var.vpc_id
  tags        = merge(var.tags, { Name = local.name })

  ingress {
    description      = "SSH from the operator (deploy, start, collect)"
    protocol         = "tcp"
    from_port        = 22
    to_port          = 22
    cidr_blocks      = local.operator_is_ipv6 ? [] : [var.operator_cidr]
    ipv6_cidr_blocks = local.operator_is_ipv6 ? [var.operator_cidr] : []
  }

  dynamic "egress" {
    for_each = local.egress_tcp
    content {
      description      = egress.value.description
      protocol         = "tcp"
      from_port        = egress.value.port
      to_port          = egress.value.port
      cidr_blocks      = egress.value.ipv4
      ipv6_cidr_blocks = egress.value.ipv6
    }
  }

  egress {
    # Security groups do not filter link-local traffic, so this rule changes nothing on EC2; it
    # states the dependency where a reader of the rules looks for it (README: "Egress").
    description = "Amazon Time Sync Service (NTP on the link-local address 169.254.169.123)"
    protocol    = "udp"
    from_port   = 123
    to_port     = 123
    cidr_blocks = ["169.254.169.123/32"]
  }
}

resource "aws_instance" "injector" {
  count = var.instance_count

  ami                    = local.ami_id
  instance_type          = var.instance_type
  key_name               = aws_key_pair.injector.key_name
  subnet_id              = var.subnet_id
  vpc_security_group_ids = [aws_security_group.injector.id]

  # Explicit, not left to the subnet: spike reaches the injectors over SSH from the operator's
  # machine. The provider sends it to EC2 only with a subnet_id (a default subnet always maps
  # public addresses), so false requires one (README: "Private networks").
  associate_public_ip_address = var.associate_public_ip

  # With the TTL shutdown in user_data this makes a forgotten injector delete itself.
  instance_initiated_shutdown_behavior = "terminate"

  user_data                   = local.user_data
  user_data_replace_on_change = true

  dynamic "instance_market_options" {
    for_each = var.use_spot ? [1] : []
    content {
      market_type = "spot"
      spot_options {
        spot_instance_type             = "one-time"
        instance_interruption_behavior = "terminate"
      }
    }
  }

  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required" # IMDSv2 only
    http_put_response_hop_limit = 1
    instance_metadata_tags      = "disabled"
  }

  root_block_device {
    encrypted             = true
    volume_type           = var.root_volume_type
    volume_size           = var.root_volume_size_gb
    delete_on_termination = true
    tags                  = merge(var.tags, { Name = "${local.name}-${count.index + 1}" })
  }

  # Injector numbers start at 1, like spike's injector ids (eu-west-2-1, eu-west-2-2, ...).
  tags = merge(var.tags, {
    Name               = "${local.name}-${count.index + 1}"
    SpikeInjectorIndex = tostring(count.index + 1)
  })
}
