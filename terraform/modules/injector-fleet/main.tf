# One region's injector fleet for one spike run: a key pair, a security group and N instances.
# Every resource carries spike's tags so that teardown and `spike reap` find it even without state.

data "aws_region" "current" {}

data "aws_ssm_parameter" "ami" {
  name = var.ami_ssm_parameter
}

locals {
  name             = "spike-${var.run_id}-${var.region_label}"
  operator_is_ipv6 = strcontains(var.operator_cidr, ":")
  # Public SSM parameters are plain strings; insecure_value keeps the AMI id out of sensitive-value plumbing.
  ami_id = data.aws_ssm_parameter.ami.insecure_value

  user_data = templatefile("${path.module}/user_data.sh.tftpl", {
    run_id           = var.run_id
    region_label     = var.region_label
    ttl_minutes      = var.ttl_minutes
    injector_workdir = var.injector_workdir
  })
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
  description = "spike injectors of run ${var.run_id}: SSH from the operator only, any egress"
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

  egress {
    # Injectors must reach the target, the package mirrors and the time servers, wherever they are.
    description      = "Any egress: the target under test, package repositories, time sync"
    protocol         = "-1"
    from_port        = 0
    to_port          = 0
    cidr_blocks      = ["0.0.0.0/0"]
    ipv6_cidr_blocks = ["::/0"]
  }
}

resource "aws_instance" "injector" {
  count = var.instance_count

  ami                    = local.ami_id
  instance_type          = var.instance_type
  key_name               = aws_key_pair.injector.key_name
  subnet_id              = var.subnet_id
  vpc_security_group_ids = [aws_security_group.injector.id]

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
