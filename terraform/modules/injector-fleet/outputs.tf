output "region" {
  description = "The region this fleet runs in (the region_label input)."
  value       = var.region_label
}

output "instance_ids" {
  description = "EC2 instance ids of the injectors, in index order."
  value       = aws_instance.injector[*].id
}

output "public_ips" {
  description = "Public IPv4 addresses of the injectors, in index order (what spike connects to over SSH)."
  value       = aws_instance.injector[*].public_ip
}

output "private_ips" {
  description = "Private IPv4 addresses of the injectors, in index order."
  value       = aws_instance.injector[*].private_ip
}

output "public_dns" {
  description = "Public DNS names of the injectors, in index order (empty where the VPC gives none)."
  value       = aws_instance.injector[*].public_dns
}

output "security_group_id" {
  description = "Id of the injectors' security group (SSH from operator_cidr only; egress to the target and the bootstrap)."
  value       = aws_security_group.injector.id
}

output "key_name" {
  description = "Name of the run's EC2 key pair."
  value       = aws_key_pair.injector.key_name
}

output "ami_id" {
  description = "The AMI the injectors were started from (ami_id, or resolved from ami_ssm_parameter)."
  value       = local.ami_id
}

output "ssh_user" {
  description = "The login user spike connects as (the ssh_user input)."
  value       = var.ssh_user
}
