# Example: switchyard in front of a MySQL RDS instance (old) and an Aurora MySQL cluster
# with autoscaled replicas (new), on ECS Fargate behind an internal NLB. Applications point
# their database host at the output `endpoint`.
#
#   terraform init && terraform apply -var vpc_id=... -var 'subnet_ids=[...]' ...

terraform {
  required_version = ">= 1.5"
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.91"
    }
  }
}

provider "aws" {
  region = var.region
}

variable "region" {
  description = "AWS region."
  type        = string
  default     = "eu-north-1"
}

variable "vpc_id" {
  description = "VPC of the applications and the databases."
  type        = string
}

variable "subnet_ids" {
  description = "Private subnets, one per availability zone."
  type        = list(string)
}

variable "app_cidrs" {
  description = "Networks of the applications."
  type        = list(string)
}

variable "database_security_group_ids" {
  description = "Security groups of the RDS instance and of the Aurora cluster."
  type        = list(string)
}

variable "app_password_secret_arn" {
  description = "Secrets Manager secret holding the application's database password."
  type        = string
}

variable "admin_token_secret_arn" {
  description = "Secrets Manager secret holding the admin API token."
  type        = string
}

variable "monitor_password_secret_arn" {
  description = "Secrets Manager secret holding the monitor account's password."
  type        = string
}

module "switchyard" {
  source = "../../modules/ecs-fargate-nlb"

  name                        = "orders-db-proxy"
  vpc_id                      = var.vpc_id
  subnet_ids                  = var.subnet_ids
  image                       = "ghcr.io/switchyard-proxy/switchyard:0.1.0"
  listener_port               = 3306
  database_port               = 3306
  client_cidrs                = var.app_cidrs
  monitoring_cidrs            = var.app_cidrs
  database_security_group_ids = var.database_security_group_ids
  shutdown_timeout_seconds    = 30
  min_count                   = 2
  max_count                   = 6
  config_toml                 = file("${path.module}/switchyard.toml")
  secrets = {
    APP_PASSWORD                = var.app_password_secret_arn
    SWITCHYARD_ADMIN_TOKEN      = var.admin_token_secret_arn
    SWITCHYARD_MONITOR_PASSWORD = var.monitor_password_secret_arn
  }
  tags = {
    service = "orders"
    purpose = "database-migration"
  }
}

output "endpoint" {
  description = "The database host applications connect to."
  value       = module.switchyard.nlb_dns_name
}
