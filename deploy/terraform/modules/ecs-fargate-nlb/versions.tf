terraform {
  required_version = ">= 1.5"
  required_providers {
    aws = {
      source = "hashicorp/aws"
      # 5.91 has aws_lb_listener.tcp_idle_timeout_seconds.
      version = ">= 5.91"
    }
  }
}
